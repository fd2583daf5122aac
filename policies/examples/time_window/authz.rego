# Example: the default grants, usable only inside a daily UTC hour window.
#
# Data document (data.caracal.zone):
#   {"grants": {"<client_id>": {"<resource identifier>": ["scope", ...]}},
#    "window": {"start_hour": 9, "end_hour": 17}}
#
# The window covers start_hour <= hour < end_hour, hours in UTC taken from
# input.time. A start after the end wraps past midnight (22 to 6 is the night
# shift); equal hours describe an empty window. No valid window denies everything.
package caracal.authz

principal := input.client.id if input.delegation == null

principal := input.delegation.root_client_id if is_object(input.delegation)

granted contains scope if {
	some scope in data.caracal.zone.grants[principal][input.resource.identifier]
}

allowed_scopes := granted & {scope | some scope in input.requested_scopes}

window := data.caracal.zone.window

valid_window if {
	is_number(window.start_hour)
	is_number(window.end_hour)
	0 <= window.start_hour
	window.start_hour < 24
	0 <= window.end_hour
	window.end_hour <= 24
}

hour := time.clock([input.time * 1000000000, "UTC"])[0]

in_window if {
	valid_window
	window.start_hour <= window.end_hour
	window.start_hour <= hour
	hour < window.end_hour
}

in_window if {
	valid_window
	window.start_hour > window.end_hour
	hour >= window.start_hour
}

in_window if {
	valid_window
	window.start_hour > window.end_hour
	hour < window.end_hour
}

decision := {
	"decision": "allow",
	"evaluation_status": "complete",
	"scopes": sort(allowed_scopes),
	"reasons": [sprintf("client %q is granted %s on %q at hour %d UTC", [
		principal,
		concat(" ", sort(allowed_scopes)),
		input.resource.identifier,
		hour,
	])],
} if {
	count(allowed_scopes) > 0
	in_window
} else := {
	"decision": "deny",
	"evaluation_status": "complete",
	"reasons": sort(deny_reasons),
}

deny_reasons contains "input names no principal client" if not principal

deny_reasons contains msg if {
	not data.caracal.zone.grants[principal][input.resource.identifier]
	msg := sprintf("client %q has no grant on %q", [principal, input.resource.identifier])
}

deny_reasons contains msg if {
	data.caracal.zone.grants[principal][input.resource.identifier]
	count(allowed_scopes) == 0
	msg := sprintf("client %q is granted none of the requested scopes on %q", [principal, input.resource.identifier])
}

deny_reasons contains "no valid time window configured" if not valid_window

deny_reasons contains msg if {
	valid_window
	not in_window
	msg := sprintf("hour %d UTC is outside the allowed window %v-%v", [hour, window.start_hour, window.end_hour])
}
