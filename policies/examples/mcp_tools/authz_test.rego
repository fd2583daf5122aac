package caracal.authz_test

import data.caracal.authz

mcp := "https://localhost:8443/mcp"

# The tools the MCP resource declares, one scope each.
declared := ["tool:search", "tool:fetch", "tool:delete", "tool:fs_read", "tool:fs_write", "tool:fsck"]

zone := {"grants": {
	"demo-agent": {mcp: ["tool:search", "tool:fetch"]},
	"ops-agent": {mcp: ["tool:fs_*", "tool:search"]},
	"billing-agent": {"https://api.example.com/invoices": ["invoices:*"]},
}}

exchange(client, resource, requested, delegation) := {
	"zone_id": "demo",
	"action": "token_exchange",
	"client": {"id": client},
	"session": {"sid": "s-2", "root_sid": "s-1"},
	"resource": {"identifier": resource, "scopes": declared},
	"requested_scopes": requested,
	"delegation": delegation,
	"time": 1767225600,
}

test_demo_agent_gets_exactly_search_and_fetch if {
	d := authz.decision with input as exchange("demo-agent", mcp, declared, null) with data.caracal.zone as zone
	d.decision == "allow"
	d.evaluation_status == "complete"
	d.scopes == ["tool:search", "tool:fetch"]
}

test_a_request_is_narrowed_to_the_granted_tools if {
	d := authz.decision with input as exchange("demo-agent", mcp, ["tool:fetch", "tool:delete"], null)
		with data.caracal.zone as zone
	d.decision == "allow"
	d.scopes == ["tool:fetch"]
}

test_an_ungranted_tool_alone_is_denied if {
	d := authz.decision with input as exchange("demo-agent", mcp, ["tool:delete"], null) with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == [`client "demo-agent" is granted none of the requested scopes on "https://localhost:8443/mcp"`]
	not d.scopes
}

test_a_tool_glob_covers_its_family_only if {
	d := authz.decision with input as exchange("ops-agent", mcp, declared, null) with data.caracal.zone as zone
	d.decision == "allow"
	d.scopes == ["tool:search", "tool:fs_read", "tool:fs_write"]
}

test_globs_outside_tool_scopes_are_literal if {
	d := authz.decision with input as exchange("billing-agent", "https://api.example.com/invoices", ["invoices:read"], null)
		with data.caracal.zone as zone
	d.decision == "deny"
}

test_a_literal_glob_scope_is_granted_exactly if {
	d := authz.decision with input as exchange("billing-agent", "https://api.example.com/invoices", ["invoices:*"], null)
		with data.caracal.zone as zone
	d.decision == "allow"
	d.scopes == ["invoices:*"]
}

test_a_client_without_a_grant_is_denied if {
	d := authz.decision with input as exchange("stranger", mcp, declared, null) with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == [`client "stranger" has no grant on "https://localhost:8443/mcp"`]
}

test_a_grant_on_another_resource_does_not_count if {
	d := authz.decision with input as exchange("demo-agent", "https://localhost:8443/api", ["tool:search"], null)
		with data.caracal.zone as zone
	d.decision == "deny"
}

test_delegation_uses_the_root_clients_tools if {
	delegation := {
		"edge_id": "e-1", "path": ["e-1"], "hop_count": 1, "scopes": ["tool:search"],
		"expires_at": 1767229200, "epoch": 2, "root_client_id": "demo-agent",
	}
	d := authz.decision with input as exchange("ops-agent", mcp, ["tool:search", "tool:fs_read"], delegation)
		with data.caracal.zone as zone
	d.decision == "allow"
	d.scopes == ["tool:search"]
}

test_delegation_without_root_client_is_denied if {
	d := authz.decision with input as exchange("demo-agent", mcp, declared, {"edge_id": "e-1"})
		with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == ["input names no principal client"]
}
