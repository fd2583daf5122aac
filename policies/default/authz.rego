# Default Caracal policy: a token exchange is allowed for the scopes the data
# document grants to the principal on the resource, and for nothing else. The
# same grants decide a client_credentials request that names a resource (input
# action "client_credentials", never under a delegation), so the one-step grant
# reaches exactly what a session followed by an exchange reaches.
#
# Data document (data.caracal.zone):
#   {"grants": {"<client_id>": {"<resource identifier>": ["scope", ...]}}}
#
# Under a delegation the principal is the client at the root of the chain: the
# delegatee acts on the root client's authority, so it needs no grant of its own,
# and it can never reach scopes the root client was not granted.
package caracal.authz

# principal is undefined when input.delegation is neither null nor an object, or
# when a delegation names no root client; the exchange is then denied.
principal := input.client.id if input.delegation == null

principal := input.delegation.root_client_id if is_object(input.delegation)

# grant is the list of scopes the principal holds on the resource.
grant := data.caracal.zone.grants[principal][input.resource.identifier]

# allowed_scopes keeps the requested scopes that are granted, in request order
# (the STS has already removed duplicates from the request).
allowed_scopes := [scope | some scope in input.requested_scopes; scope in grant]

# The allow path is evaluated on every exchange, so it builds no strings; the
# STS logs the decision itself.
decision := {
	"decision": "allow",
	"evaluation_status": "complete",
	"scopes": allowed_scopes,
} if {
	count(allowed_scopes) > 0
} else := {
	"decision": "deny",
	"evaluation_status": "complete",
	"reasons": sort(deny_reasons),
}

deny_reasons contains "input names no principal client" if not principal

deny_reasons contains msg if {
	not grant
	msg := sprintf("client %q has no grant on %q", [principal, input.resource.identifier])
}

deny_reasons contains msg if {
	grant
	count(allowed_scopes) == 0
	msg := sprintf("client %q is granted none of the requested scopes on %q", [principal, input.resource.identifier])
}
