package caracal.authz_test

import data.caracal.authz

zone := {
	"labels": {
		"billing-agent": {"tier": "trusted", "team": "finance"},
		"support-agent": {"tier": "trusted", "team": "support"},
		"scraper": {"tier": "untrusted"},
	},
	"requirements": {
		"https://api.example.com/invoices": {"tier": "trusted", "team": "finance"},
		"https://api.example.com/status": {},
	},
}

exchange(client, resource, delegation) := {
	"zone_id": "acme",
	"action": "token_exchange",
	"client": {"id": client},
	"session": {"sid": "s-2", "root_sid": "s-1"},
	"resource": {"identifier": resource, "scopes": ["read"]},
	"requested_scopes": ["read"],
	"delegation": delegation,
	"time": 1767225600,
}

invoices := "https://api.example.com/invoices"

test_allows_a_client_with_every_required_label if {
	d := authz.decision with input as exchange("billing-agent", invoices, null) with data.caracal.zone as zone
	d.decision == "allow"
	d.evaluation_status == "complete"
	not "scopes" in object.keys(d)
}

test_denies_a_client_missing_one_label if {
	d := authz.decision with input as exchange("support-agent", invoices, null) with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == [`client "support-agent" lacks label team=finance`]
}

test_denies_a_client_with_a_wrong_label_value if {
	d := authz.decision with input as exchange("scraper", invoices, null) with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == [`client "scraper" lacks label team=finance`, `client "scraper" lacks label tier=trusted`]
}

test_denies_an_unlabelled_client if {
	d := authz.decision with input as exchange("stranger", invoices, null) with data.caracal.zone as zone
	d.decision == "deny"
	count(d.reasons) == 2
}

test_empty_requirements_open_the_resource if {
	d := authz.decision with input as exchange("stranger", "https://api.example.com/status", null)
		with data.caracal.zone as zone
	d.decision == "allow"
}

test_a_resource_without_requirements_is_closed if {
	d := authz.decision with input as exchange("billing-agent", "https://api.example.com/other", null)
		with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == [`resource "https://api.example.com/other" declares no label requirements`]
}

test_delegation_uses_the_root_clients_labels if {
	delegation := {
		"edge_id": "e-1", "path": ["e-1"], "hop_count": 1, "scopes": ["read"],
		"expires_at": 1767229200, "epoch": 1, "root_client_id": "billing-agent",
	}
	d := authz.decision with input as exchange("scraper", invoices, delegation) with data.caracal.zone as zone
	d.decision == "allow"
}

test_delegation_without_root_client_is_denied if {
	d := authz.decision with input as exchange("billing-agent", invoices, {"edge_id": "e-1"})
		with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == ["input names no principal client"]
}
