package emr.request_test

import rego.v1

import data.emr.request

base := {
	"subject": {"id": "u-nurse-1", "roles": ["nurse"], "dept": "cardiology"},
	"purpose": "TREAT",
	"action": {"interaction": "read", "operation": null},
	"target": {"type": "Patient", "id": "p1", "params": {}, "entries": [], "patients": ["Patient/p1"]},
}

rules(d) := {r.rule | some r in d.reasons}

test_nurse_reads_patient_for_treatment if {
	d := request.decision with input as base
	d.allow
	d.reasons == []
}

# I.2
test_missing_purpose_refused if {
	d := request.decision with input as object.union(base, {"purpose": null})
	not d.allow
	"purpose.required" in rules(d)
}

test_empty_purpose_refused if {
	d := request.decision with input as object.union(base, {"purpose": ""})
	"purpose.required" in rules(d)
}

test_absent_purpose_refused if {
	d := request.decision with input as object.remove(base, ["purpose"])
	"purpose.required" in rules(d)
}

# I.2: marketing and payment are not care, teaching or research.
test_marketing_purpose_refused if {
	d := request.decision with input as object.union(base, {"purpose": "HMARKT"})
	not d.allow
	rules(d) == {"purpose.not-permitted"}
}

test_capabilities_need_no_purpose if {
	d := request.decision with input as object.union(base, {"purpose": null, "action": {"interaction": "capabilities", "operation": null}, "target": {"type": null, "params": {}, "entries": []}})
	d.allow
}

# II.1
test_unknown_role_refused if {
	d := request.decision with input as object.union(base, {"subject": {"id": "x", "roles": ["janitor"]}})
	"role.unknown" in rules(d)
}

# I.4: a student may claim only TRAIN.
test_student_cannot_claim_treatment if {
	d := request.decision with input as object.union(base, {"subject": {"id": "s1", "roles": ["student"]}})
	rules(d) == {"purpose.role"}
}

test_student_reads_for_training if {
	d := request.decision with input as object.union(base, {"subject": {"id": "s1", "roles": ["student"]}, "purpose": "TRAIN"})
	d.allow
}

test_student_cannot_write if {
	d := request.decision with input as object.union(base, {"subject": {"id": "s1", "roles": ["student"]}, "purpose": "TRAIN", "action": {"interaction": "create", "operation": null}})
	rules(d) == {"interaction.not-permitted"}
}

test_nurse_cannot_delete if {
	d := request.decision with input as object.union(base, {"action": {"interaction": "delete", "operation": null}})
	rules(d) == {"interaction.not-permitted"}
}

test_records_officer_deletes if {
	d := request.decision with input as object.union(base, {"subject": {"id": "r1", "roles": ["records_officer"]}, "purpose": "HOPERAT", "action": {"interaction": "delete", "operation": null}})
	d.allow
}

test_everything_operation_by_role if {
	inp := object.union(base, {"action": {"interaction": "operation", "operation": "$everything"}})
	d := request.decision with input as inp
	d.allow
	d2 := request.decision with input as object.union(inp, {"subject": {"id": "s1", "roles": ["student"]}, "purpose": "TRAIN"})
	not d2.allow
}

test_export_refused if {
	d := request.decision with input as object.union(base, {"action": {"interaction": "operation", "operation": "$export"}})
	some r in d.reasons
	r.rule == "interaction.not-permitted"
	contains(r.en, "$export")
}

test_graphql_refused if {
	d := request.decision with input as object.union(base, {"action": {"interaction": "graphql", "operation": "$graphql"}})
	rules(d) == {"interaction.not-permitted"}
}

# I.4 minimum necessary
test_pharmacist_cannot_search_conditions if {
	d := request.decision with input as object.union(base, {"subject": {"id": "ph1", "roles": ["pharmacist"]}, "action": {"interaction": "search-type", "operation": null}, "target": {"type": "Condition", "params": {}, "entries": []}})
	rules(d) == {"type.not-visible"}
}

test_pharmacist_searches_medication_requests if {
	d := request.decision with input as object.union(base, {"subject": {"id": "ph1", "roles": ["pharmacist"]}, "action": {"interaction": "search-type", "operation": null}, "target": {"type": "MedicationRequest", "params": {}, "entries": []}})
	d.allow
}

test_security_officer_sees_no_clinical_records if {
	d := request.decision with input as object.union(base, {"subject": {"id": "so1", "roles": ["security_officer"]}, "purpose": "HOPERAT"})
	not d.allow
}

test_summary_count_refused if {
	d := request.decision with input as object.union(base, {"action": {"interaction": "search-type", "operation": null}, "target": {"type": "Observation", "params": {"_summary": ["count"]}, "entries": []}})
	rules(d) == {"search.count-only"}
}

test_transaction_entries_decided_one_by_one if {
	entries := [
		{"interaction": "create", "type": "Observation", "operation": null},
		{"interaction": "delete", "type": "Observation", "operation": null},
		{"interaction": "read", "type": "Condition", "operation": null},
	]
	inp := object.union(base, {"subject": {"id": "ph1", "roles": ["pharmacist"]}, "action": {"interaction": "transaction", "operation": null}, "target": {"type": null, "params": {}, "entries": entries}})
	d := request.decision with input as inp
	not d.allow
	rules(d) == {"interaction.not-permitted", "type.not-visible"}
	count([r | some r in d.reasons; r.rule == "interaction.not-permitted"]) == 2
}

test_batch_allowed_when_every_entry_is if {
	entries := [{"interaction": "read", "type": "Patient", "operation": null}, {"interaction": "create", "type": "Observation", "operation": null}]
	d := request.decision with input as object.union(base, {"action": {"interaction": "batch", "operation": null}, "target": {"type": null, "params": {}, "entries": entries}})
	d.allow
}

test_operation_name_fallback if {
	request.action_name("operation", null) == "operation"
	request.action_name("read", null) == "read"
	request.action_name("operation", "$everything") == "$everything"
}

test_conditional_writes_refused if {
	d := request.decision with input as object.union(base, {"action": {"interaction": "update", "operation": null, "conditional": true}, "target": {"type": "Observation", "params": {"identifier": ["x"]}, "entries": []}})
	rules(d) == {"write.conditional"}
	e := [{"interaction": "create", "type": "Observation", "operation": null, "conditional": true}]
	d2 := request.decision with input as object.union(base, {"action": {"interaction": "transaction", "operation": null}, "target": {"type": null, "params": {}, "entries": e}})
	rules(d2) == {"write.conditional"}
}

# A Binary's content is opaque to the filter: "*" does not cover it.
test_binary_needs_explicit_listing if {
	d := request.decision with input as object.union(base, {"target": {"type": "Binary", "params": {}, "entries": []}})
	rules(d) == {"type.not-visible"}
	d2 := request.decision with input as object.union(base, {"subject": {"id": "r1", "roles": ["records_officer"]}, "purpose": "HOPERAT", "target": {"type": "Binary", "params": {}, "entries": []}})
	d2.allow
}
