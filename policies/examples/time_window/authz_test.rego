package caracal.authz_test

import data.caracal.authz

office_hours := {
	"grants": {"billing-agent": {"https://api.example.com/invoices": ["invoices:read"]}},
	"window": {"start_hour": 9, "end_hour": 17},
}

night_shift := object.union(office_hours, {"window": {"start_hour": 22, "end_hour": 6}})

# at returns an exchange by billing-agent on 2026-01-01 at the given UTC hour and minute.
at(h, m) := {
	"zone_id": "acme",
	"action": "token_exchange",
	"client": {"id": "billing-agent"},
	"session": {"sid": "s-1", "root_sid": "s-1"},
	"resource": {"identifier": "https://api.example.com/invoices", "scopes": ["invoices:read"]},
	"requested_scopes": ["invoices:read"],
	"delegation": null,
	"time": ((1767225600 + (h * 3600)) + (m * 60)),
}

test_allows_inside_the_window if {
	d := authz.decision with input as at(9, 0) with data.caracal.zone as office_hours
	d.decision == "allow"
	d.evaluation_status == "complete"
	d.scopes == ["invoices:read"]
}

test_allows_the_last_minute_of_the_window if {
	d := authz.decision with input as at(16, 59) with data.caracal.zone as office_hours
	d.decision == "allow"
}

test_denies_before_the_window if {
	d := authz.decision with input as at(8, 59) with data.caracal.zone as office_hours
	d.decision == "deny"
	d.reasons == ["hour 8 UTC is outside the allowed window 9-17"]
}

test_the_end_hour_is_exclusive if {
	d := authz.decision with input as at(17, 0) with data.caracal.zone as office_hours
	d.decision == "deny"
}

test_a_wrapping_window_allows_late_evening if {
	d := authz.decision with input as at(23, 30) with data.caracal.zone as night_shift
	d.decision == "allow"
}

test_a_wrapping_window_allows_early_morning if {
	d := authz.decision with input as at(5, 59) with data.caracal.zone as night_shift
	d.decision == "allow"
}

test_a_wrapping_window_denies_midday if {
	d := authz.decision with input as at(12, 0) with data.caracal.zone as night_shift
	d.decision == "deny"
}

test_an_equal_start_and_end_is_an_empty_window if {
	zone := object.union(office_hours, {"window": {"start_hour": 9, "end_hour": 9}})
	d := authz.decision with input as at(9, 0) with data.caracal.zone as zone
	d.decision == "deny"
}

test_denies_without_a_window if {
	d := authz.decision with input as at(10, 0) with data.caracal.zone as object.remove(office_hours, ["window"])
	d.decision == "deny"
	d.reasons == ["no valid time window configured"]
}

test_denies_a_window_that_is_not_numeric if {
	zone := object.union(office_hours, {"window": {"start_hour": "9", "end_hour": 17}})
	d := authz.decision with input as at(10, 0) with data.caracal.zone as zone
	d.decision == "deny"
	d.reasons == ["no valid time window configured"]
}

test_grants_still_apply_inside_the_window if {
	d := authz.decision with input as object.union(at(10, 0), {"requested_scopes": ["invoices:write"]})
		with data.caracal.zone as office_hours
	d.decision == "deny"
	d.reasons == [`client "billing-agent" is granted none of the requested scopes on "https://api.example.com/invoices"`]
}
