package emr.roles_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request

# II.1
test_unknown_role_refused if {
	d := request.decision with input as f.read("x", "TREAT", "Patient", ["Patient/p1"])
	f.rules(d) == {"role.unknown"}
	f.well_formed(d)
}

test_unknown_role_ignored_beside_a_known_one if {
	inp := f.with_subject(f.read("dr-li", "TREAT", "Patient", ["Patient/p1"]), {"id": "dr-li", "roles": ["janitor", "physician"], "dept": "cardiology", "grants": []})
	d := request.decision with input as inp
	d.allow
}

# I.4: a student may claim only TRAIN, a pharmacist only TREAT.
test_purpose_role if {
	d := request.decision with input as f.read("stu-001", "TREAT", "Patient", ["Patient/p1"])
	f.rules(d) == {"purpose.role"}
	d2 := request.decision with input as f.read("ph-1", "HRESCH", "Patient", ["Patient/p1"])
	f.rules(d2) == {"purpose.role"}
	d3 := request.decision with input as f.read("stu-001", "TRAIN", "Patient", ["Patient/p1"])
	d3.allow
}

# I.4 minimum necessary: the types a role may read.
test_pharmacist_types if {
	d := request.decision with input as f.read("ph-1", "TREAT", "Condition", ["Patient/p2"])
	f.rules(d) == {"type.not-visible"}
	d2 := request.decision with input as f.read("ph-1", "TREAT", "MedicationRequest", ["Patient/p2"])
	d2.allow
}

# A Binary's content is opaque to the filter: "*" does not cover it.
test_binary_needs_explicit_listing if {
	d := request.decision with input as f.read("dr-li", "TREAT", "Binary", ["Patient/p1"])
	f.rules(d) == {"type.not-visible"}
	d2 := request.decision with input as f.read("rec-chen", "HOPERAT", "Binary", ["Patient/p1"])
	d2.allow
}

test_operations_by_role if {
	d := request.decision with input as f.op("dr-li", "TREAT", "$everything", "Patient", ["Patient/p1"])
	d.allow
	d2 := request.decision with input as f.op("stu-001", "TRAIN", "$everything", "Patient", ["Patient/p1"])
	f.rules(d2) == {"interaction.not-permitted"}
	d3 := request.decision with input as f.op("nurse-zhao", "TREAT", "$validate", "Observation", [])
	f.rules(d3) == {"interaction.not-permitted"}
	d4 := request.decision with input as f.op("dr-li", "TREAT", "$validate", "Observation", [])
	d4.allow
	d5 := request.decision with input as f.op("ph-1", "TREAT", "$everything", "Condition", ["Patient/p1"])
	f.rules(d5) == {"type.not-visible"}
}

test_unknown_interaction_refused if {
	d := request.decision with input as f.req("dr-li", "TREAT", "frobnicate", "Patient", ["Patient/p1"])
	f.rules(d) == {"interaction.not-permitted"}
	some r in d.reasons
	contains(r.en, "frobnicate")
}

test_system_search_needs_a_reading_role if {
	d := request.decision with input as f.req("dr-li", "TREAT", "search-system", null, [])
	d.allow
	d2 := request.decision with input as f.req("sec-wang", "HOPERAT", "history-system", null, [])
	"interaction.not-permitted" in f.rules(d2)
	some r in d2.reasons
	contains(r.en, "admin API")
}

# Security officers, inspectors and admins see no clinical records (max grade 0).
test_security_officer_sees_no_clinical_records if {
	d := request.decision with input as f.read("sec-wang", "HOPERAT", "Patient", ["Patient/p1"])
	not d.allow
	f.rules(d) == {"type.not-visible", "grade.exceeded"}
	data.emr.roles.max_cap == 0 with input as f.read("sec-wang", "HOPERAT", "Patient", [])
}

# I.4 graded access: what a request reaches is at least the type's grade and the patients' flags.
test_grade_floor if {
	d := request.decision with input as f.read("stu-001", "TRAIN", "Patient", ["Patient/vip"])
	f.rules(d) == {"grade.exceeded"}
	d2 := request.decision with input as f.read("dr-li", "TREAT", "Patient", ["Patient/vip"])
	d2.allow
	d3 := request.decision with input as f.read("ven-1", "HOPERAT", "Encounter", ["Patient/p2"])
	d3.allow
	d4 := request.decision with input as f.read("ven-1", "HOPERAT", "Encounter", ["Patient/staff"])
	f.rules(d4) == {"grade.exceeded"}
}

test_caps if {
	data.emr.roles.cap == {"nurse": 4} with input as f.read("nurse-zhao", "TREAT", "Patient", [])
	data.emr.roles.cap == {"nurse": 5} with input as f.read("nurse-zhao", "ETREAT", "Patient", [])
	data.emr.roles.max_cap == 3 with input as f.read("dr-li", "TRAIN", "Patient", [])
	data.emr.roles.max_cap == 0 with input as f.read("dr-li", "HMARKT", "Patient", [])
}

# II.1: a vendor acts only within its agreement (the interaction AND the type, in one grant).
test_vendor_scope if {
	d := request.decision with input as f.req("ven-1", "HOPERAT", "search-type", "Device", [])
	d.allow
	d2 := request.decision with input as f.req("ven-1", "HOPERAT", "search-type", "Observation", [])
	f.rules(d2) == {"grant.out-of-scope", "grade.exceeded"}
	d3 := request.decision with input as f.req("ven-1", "HOPERAT", "history-instance", "Device", [])
	f.rules(d3) == {"grant.out-of-scope"}
	some r in d3.reasons
	contains(r.en, "VA-2026-07") == false
	contains(r.en, "g-ven") == false # the grant id is in detail (audit only)
	r.detail.grants == ["g-ven"]
	d4 := request.decision with input as f.req("ven-1", "HOPERAT", "search-system", null, [])
	f.rules(d4) == {"grant.out-of-scope"}
}

test_vendor_wildcard_scope_excludes_binary if {
	g := object.union(f.vendor_grant, {"scope": {"types": ["*"], "interactions": ["read"]}})
	s := object.union(f.subjects["ven-1"], {"grants": [g]})
	d := request.decision with input as f.with_subject(f.read("ven-1", "HOPERAT", "Device", []), s)
	d.allow
	d2 := request.decision with input as f.with_subject(f.read("ven-1", "HOPERAT", "Binary", []), s)
	f.rules(d2) == {"grant.out-of-scope", "grade.exceeded"}
}

# A read operation at system level names no type to check here (the response filter checks each).
test_system_level_everything if {
	d := request.decision with input as f.op("dr-li", "TREAT", "$everything", null, [])
	d.allow
}

# The floor's grade is in detail, not the text: raised by a flag, it would say the patient is a VIP.
test_grade_floor_reason_names_no_grade if {
	d := request.decision with input as f.read("stu-001", "TRAIN", "Patient", ["Patient/vip"])
	[r] := d.reasons
	r.detail == {"grade": 4}
	not contains(r.en, "grade 4")
	not contains(r.zh, "4 级")
}
