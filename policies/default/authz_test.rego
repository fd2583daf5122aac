package caracal.authz_test

import data.caracal.authz

zone := {"grants": {
	"billing-agent": {"https://api.example.com/invoices": ["invoices:read", "invoices:write"]},
	"support-agent": {"https://api.example.com/invoices": ["invoices:read"]},
}}

exchange(client, requested, delegation) := {
	"zone_id": "acme",
	"action": "token_exchange",
	"client": {"id": client},
	"session": {"sid": "s-2", "root_sid": "s-1"},
	"resource": {
		"identifier": "https://api.example.com/invoices",
		"scopes": ["invoices:read", "invoices:write", "invoices:delete"],
	},
	"requested_scopes": requested,
	"delegation": delegation,
	"time": 1767225600,
}

delegated_from(root) := {
	"edge_id": "e-1",
	"path": ["e-1"],
	"hop_count": 1,
	"scopes": ["invoices:read"],
	"expires_at": 1767229200,
	"epoch": 4,
	"root_client_id": root,
}

test_allows_the_granted_scopes if {
	d := authz.decision with input as exchange("billing-agent", ["invoices:read", "invoices:write"], null)
		with data.caracal.zone as zone
	d.decision == "allow"
	d.evaluation_status == "complete"
	d.scopes == ["invoices:read", "invoices:write"]
}

test_narrows_to_the_granted_part_of_the_request if {
	d := authz.decision with input as exchange("support-agent", ["invoices:read", "invoices:write"], null)
		with data.caracal.zone as zone
	d.decision == "allow"
	d.scopes == ["invoices:read"]
}

test_denies_a_client_without_a_grant if {
	d := authz.decision with input as exchange("stranger", ["invoices:read"], null)
		with data.caracal.zone as zone
	d.decision == "deny"
	d.evaluation_status == "complete"
	d.reasons == [`client "stranger" has no grant on "https://api.example.com/invoices"`]
	not d.scopes
}

test_denies_when_no_requested_scope_is_granted if {
	d := authz.decision with input as exchange("support-agent", ["invoices:delete"], null)
		with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == [`client "support-agent" is granted none of the requested scopes on "https://api.example.com/invoices"`]
}

test_denies_an_empty_request if {
	d := authz.decision with input as exchange("billing-agent", [], null)
		with data.caracal.zone as zone
	d.decision == "deny"
}

test_denies_everything_without_data if {
	d := authz.decision with input as exchange("billing-agent", ["invoices:read"], null)
	d.decision == "deny"
}

test_delegation_uses_the_root_clients_grant if {
	d := authz.decision with input as exchange("stranger", ["invoices:read"], delegated_from("billing-agent"))
		with data.caracal.zone as zone
	d.decision == "allow"
	d.scopes == ["invoices:read"]
}

test_delegation_ignores_the_delegatees_own_grant if {
	d := authz.decision with input as exchange("billing-agent", ["invoices:write"], delegated_from("stranger"))
		with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == [`client "stranger" has no grant on "https://api.example.com/invoices"`]
}

test_delegation_without_root_client_is_denied if {
	d := authz.decision with input as exchange("billing-agent", ["invoices:read"], {"edge_id": "e-1"})
		with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == ["input names no principal client"]
}

test_missing_delegation_member_is_denied if {
	d := authz.decision with input as object.remove(exchange("billing-agent", ["invoices:read"], null), ["delegation"])
		with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == ["input names no principal client"]
}

test_client_credentials_uses_the_same_grants if {
	d := authz.decision with input as object.union(exchange("support-agent", ["invoices:read", "invoices:write"], null), {"action": "client_credentials"})
		with data.caracal.zone as zone
	d.decision == "allow"
	d.scopes == ["invoices:read"]
}

test_client_credentials_denies_a_client_without_a_grant if {
	d := authz.decision with input as object.union(exchange("stranger", ["invoices:read"], null), {"action": "client_credentials"})
		with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == [`client "stranger" has no grant on "https://api.example.com/invoices"`]
}
