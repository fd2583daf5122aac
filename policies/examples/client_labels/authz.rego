# Example: attribute-based access. Clients carry labels, each resource names the
# labels a client must carry to reach it, and a client carrying all of them gets
# whatever scopes it asked for (the STS has already checked them against the
# resource's declared scopes).
#
# Data document (data.caracal.zone):
#   {"labels":       {"<client_id>": {"tier": "trusted", ...}},
#    "requirements": {"<resource identifier>": {"tier": "trusted", ...}}}
#
# A resource without an entry in requirements is closed; an empty requirements
# object opens it to every client. Under a delegation the root client's labels
# count, as with the default policy's grants.
package caracal.authz

principal := input.client.id if input.delegation == null

principal := input.delegation.root_client_id if is_object(input.delegation)

requirements := data.caracal.zone.requirements[input.resource.identifier]

# A helper rule because `not is_object(requirements)` would not hold when
# requirements is undefined: an undefined argument fails the whole expression,
# negation included.
requirements_declared if is_object(requirements)

unmet contains key if {
	some key, want in requirements
	not has_label(key, want)
}

has_label(key, want) if data.caracal.zone.labels[principal][key] == want

decision := {
	"decision": "allow",
	"evaluation_status": "complete",
	"reasons": [sprintf("client %q carries the labels %q requires", [principal, input.resource.identifier])],
} if {
	principal
	requirements_declared
	count(unmet) == 0
} else := {
	"decision": "deny",
	"evaluation_status": "complete",
	"reasons": sort(deny_reasons),
}

deny_reasons contains "input names no principal client" if not principal

deny_reasons contains msg if {
	not requirements_declared
	msg := sprintf("resource %q declares no label requirements", [input.resource.identifier])
}

deny_reasons contains msg if {
	principal
	some key in unmet
	msg := sprintf("client %q lacks label %s=%v", [principal, key, requirements[key]])
}
