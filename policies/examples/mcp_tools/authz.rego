# Example: tools of an MCP server as scopes. An MCP route of caracal_mandate names
# what each tool needs; by convention a tool called <name> needs the scope
# tool:<name>, and the MCP resource declares one such scope per tool it guards. A
# grant lists the scopes a client holds on a resource, as in the default bundle,
# and a grant entry starting with "tool:" may be a glob ("tool:fs_*") that covers a
# family of tools, each call still narrowed to the tools the client asked for.
#
# Data document (data.caracal.zone):
#   {"grants": {"<client_id>": {"<resource identifier>": ["tool:search", "tool:fs_*", "other", ...]}}}
#
# Scopes that do not start with "tool:" are matched exactly. A request without a
# scope parameter asks for every scope the resource declares, so the mandate the
# STS issues carries exactly the granted tools.
package caracal.authz

principal := input.client.id if input.delegation == null

principal := input.delegation.root_client_id if is_object(input.delegation)

grant := data.caracal.zone.grants[principal][input.resource.identifier]

tool_prefix := "tool:"

# granted(scope) holds when an entry of the grant covers scope.
granted(scope) if scope in grant

granted(scope) if {
	startswith(scope, tool_prefix)
	some entry in grant
	startswith(entry, tool_prefix)
	contains(entry, "*")
	glob.match(entry, [], scope)
}

allowed_scopes := [scope | some scope in input.requested_scopes; granted(scope)]

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
	principal
	not grant
	msg := sprintf("client %q has no grant on %q", [principal, input.resource.identifier])
}

deny_reasons contains msg if {
	grant
	count(allowed_scopes) == 0
	msg := sprintf("client %q is granted none of the requested scopes on %q", [principal, input.resource.identifier])
}
