package emr.request_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request

test_decision_shape if {
	d := request.decision with input as f.read("dr-li", "TREAT", "Observation", ["Patient/p1"])
	d == {"allow": true, "reasons": [], "obligations": [], "valid_until": null}
	d2 := request.decision with input as f.read("dr-li", "HMARKT", "Observation", ["Patient/p1"])
	d2.allow == false
	is_array(d2.reasons)
	is_array(d2.obligations)
	f.well_formed(d2)
}

# I.4: permissions of two roles are not combined: the nurse role reads Conditions of related
# patients, the pharmacist role reaches any patient but not Conditions.
test_roles_not_combined if {
	s := {"id": "np-1", "roles": ["nurse", "pharmacist"], "dept": "cardiology", "grants": []}
	d := request.decision with input as f.with_subject(f.read("dr-li", "TREAT", "Condition", ["Patient/p2"]), s)
	f.rules(d) == {"role.combination"}
	f.well_formed(d)
	d2 := request.decision with input as f.with_subject(f.read("dr-li", "TREAT", "MedicationRequest", ["Patient/p2"]), s)
	d2.allow
	d3 := request.decision with input as f.with_subject(f.read("dr-li", "TREAT", "Condition", ["Patient/p1"]), s)
	d3.allow
	d4 := request.decision with input as f.with_subject(f.req("dr-li", "TREAT", "create", "MedicationDispense", ["Patient/p2"]), s)
	d4.allow
	d5 := request.decision with input as f.with_subject(f.req("dr-li", "TREAT", "create", "Observation", ["Patient/p2"]), s)
	f.rules(d5) == {"role.combination"}
}

# Every entry of a batch or transaction is decided like a request of its own.
test_transaction_entries_decided_one_by_one if {
	entries := [
		f.bentry("create", "Observation", ["Patient/p2"]),
		f.bentry("delete", "Observation", ["Patient/p2"]),
		f.bentry("read", "Condition", ["Patient/p2"]),
		f.bentry("create", "MedicationDispense", ["Patient/p2"]),
	]
	d := request.decision with input as f.batch("ph-1", "TREAT", "transaction", entries)
	not d.allow
	f.rules(d) == {"write.not-permitted", "type.not-visible"}
	{r.en | some r in d.reasons; startswith(r.en, "Bundle.entry[0]: ")} != set()
	{r.en | some r in d.reasons; startswith(r.en, "Bundle.entry[1]: ")} != set()
	{r.en | some r in d.reasons; startswith(r.en, "Bundle.entry[2]: ")} != set()
	{r.en | some r in d.reasons; startswith(r.en, "Bundle.entry[3]: ")} == set()
}

test_batch_allowed_when_every_entry_is if {
	entries := [f.bentry("read", "Patient", ["Patient/p1"]), f.bentry("create", "Observation", ["Patient/p1"])]
	d := request.decision with input as f.batch("nurse-zhao", "TREAT", "batch", entries)
	d.allow
}

# A batch entry is never itself a batch.
test_nested_container_refused if {
	d := request.decision with input as f.batch("dr-li", "TREAT", "batch", [f.bentry("batch", null, [])])
	f.rules(d) == {"interaction.not-permitted"}
}

# Patients the gateway found outside any entry are checked too.
test_container_patients_checked if {
	inp := object.union(f.batch("dr-li", "TREAT", "transaction", [f.bentry("read", "Patient", ["Patient/p1"])]), {"target": {"patients": ["Patient/p1", "Patient/p2"]}})
	d := request.decision with input as inp
	f.rules(d) == {"care.no-relationship"}
	some r in d.reasons
	not startswith(r.en, "Bundle.entry")
}

# Fail closed: an input the policy cannot read is refused.
test_malformed_request_refused if {
	d := request.decision with input as {"subject": {"id": "dr-li", "roles": ["physician"]}, "purpose": "TREAT", "target": "nonsense"}
	not d.allow
	d2 := request.decision with input as {}
	not d2.allow
}

# Fail closed: a target the policy could not build (one entry unreadable) refuses the request.
test_unread_target_refused if {
	inp := f.batch("nurse-zhao", "TREAT", "batch", [f.bentry("read", "Patient", ["Patient/p1"])])
	d := request.decision with input as inp with data.emr.lib.targets as set()
	f.rules(d) == {"request.malformed"}
	f.well_formed(d)
}

# Several roles: each part of a batch, an export or a GraphQL query is judged for one role at a time.
test_several_roles_on_containers_and_exports if {
	s := {"id": "rec-chen", "roles": ["records_officer", "physician"], "dept": "cardiology", "grants": [f.export_grant]}
	exp := f.with_params(f.op("rec-chen", "TREAT", "$export", null, []), {"_type": ["Patient"]})
	d := request.decision with input as f.with_subject(exp, s)
	f.rules(d) == {"export.no-grant"}
	d2 := request.decision with input as f.with_subject(f.batch("rec-chen", "TREAT", "batch", [f.bentry("read", "Patient", ["Patient/p2"])]), s)
	d2.allow
	d3 := request.decision with input as f.with_subject(f.req("rec-chen", "TREAT", "graphql", null, []), s)
	f.rules(d3) == {"graphql.not-permitted"}
}
