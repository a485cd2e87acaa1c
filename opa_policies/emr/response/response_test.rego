package emr.response_test

import rego.v1

import data.emr.fixtures as f
import data.emr.response

test_one_verdict_per_entry_in_order if {
	entries := [f.entry("Patient", ["Patient/p2"]), f.entry("Condition", ["Patient/p2"]), f.entry("Observation", ["Patient/p2"])]
	d := response.decision with input as f.resp("ph-1", "TREAT", entries)
	f.kept(d) == [true, false, true]
	every v in d.verdicts {
		object.keys(v) == {"keep", "grade", "redact", "transform", "pseudonymise", "reasons"}
	}
	d.verdicts[1].grade == 3
	[r.rule | some r in d.verdicts[1].reasons] == ["type.not-visible"]
	d.verdicts[1].reasons[0].clause == "I.4"
}

test_empty_response if {
	d := response.decision with input as f.resp("dr-li", "TREAT", [])
	d == {"verdicts": [], "obligations": [], "valid_until": null}
}

# I.4 graded access: a nurse (TREAT: up to grade 4) loses very restricted records, a physician not.
test_grade_exceeded if {
	entries := [f.labelled("Condition", ["Patient/p1"], f.conf, "V"), f.coded("Condition", ["Patient/p1"], f.icd, "B20"), f.entry("Condition", ["Patient/p1"])]
	d := response.decision with input as f.resp("nurse-zhao", "TREAT", entries)
	f.kept(d) == [false, false, true]
	[r.rule | some r in d.verdicts[0].reasons] == ["grade.exceeded"]
	not contains(d.verdicts[0].reasons[0].en, "grade 5") # the record's grade would say what it is
	d.verdicts[0].reasons[0].detail == {"grade": 5}
	d2 := response.decision with input as f.resp("dr-li", "TREAT", entries)
	f.kept(d2) == [true, true, true]
	d3 := response.decision with input as f.resp("nurse-zhao", "ETREAT", entries)
	f.kept(d3) == [true, true, true]
}

# Binary only for roles that name it.
test_binary if {
	d := response.decision with input as f.resp("dr-li", "TREAT", [f.entry("Binary", ["Patient/p1"])])
	f.kept(d) == [false]
	d2 := response.decision with input as f.resp("rec-chen", "HOPERAT", [f.entry("Binary", ["Patient/p1"])])
	f.kept(d2) == [true]
}

# No active role (wrong purpose): everything withheld.
test_no_active_role_drops_everything if {
	d := response.decision with input as f.resp("stu-001", "TREAT", [f.entry("Patient", ["Patient/p1"]), f.entry("Organization", [])])
	f.kept(d) == [false, false]
}

# Permissions of two roles are not combined in responses either.
test_roles_not_combined if {
	s := {"id": "np-1", "roles": ["nurse", "pharmacist"], "dept": "cardiology", "grants": []}
	d := response.decision with input as f.with_subject(f.resp("dr-li", "TREAT", [f.entry("Condition", ["Patient/p2"]), f.entry("MedicationRequest", ["Patient/p2"]), f.entry("Condition", ["Patient/p1"])]), s)
	f.kept(d) == [false, true, true]
	[r.rule | some r in d.verdicts[0].reasons] == ["role.combination"]
}

# The capability statement needs no purpose.
test_capability_statement if {
	inp := object.union(f.req("x", null, "capabilities", null, []), {"entries": [f.entry("CapabilityStatement", [])]})
	d := response.decision with input as inp
	f.kept(d) == [true]
	d.verdicts[0].grade == 1
	d2 := response.decision with input as object.union(inp, {"entries": [f.entry("Patient", ["Patient/p1"])]})
	f.kept(d2) == [false]
}

# Fail closed: an entry without type or patients gets no verdict (the gateway refuses).
test_malformed_entry_gets_no_verdict if {
	d := response.decision with input as f.resp("dr-li", "TREAT", [object.remove(f.entry("Patient", ["Patient/p1"]), ["patients"]), f.entry("Patient", ["Patient/p1"])])
	count(d.verdicts) == 1
}

# Nothing leaks (class 3): a withheld record's reasons name none of its patients, no case and no
# grade: one reason per concern, the specifics in detail (audit only).
test_withheld_reasons_name_nothing_unsent if {
	entries := [
		f.entry("Observation", ["Patient/p2", "Patient/sealed", "Patient/nobody", "Patient/p3"]),
		f.coded("Condition", ["Patient/p1"], f.icd, "B20"),
	]
	d := response.decision with input as f.resp("nurse-zhao", "TREAT", entries)
	f.kept(d) == [false, false]
	[[r.rule, r.detail] | some r in d.verdicts[0].reasons] == [
		["seal.sealed", {"patients": ["Patient/sealed"], "cases": ["舆情-2026-031"], "discreet": true}],
		["care.no-relationship", {"patients": ["Patient/p2", "Patient/p3"], "no_context": [], "rotation_departments": []}],
		["care.no-relationship", {"patients": [], "no_context": ["Patient/nobody"], "rotation_departments": []}],
	]
	d.verdicts[1].reasons[0].detail == {"grade": 5}
	every v in d.verdicts {
		every r in v.reasons {
			not contains(concat(" ", [r.en, r.zh]), "Patient/")
			not contains(concat(" ", [r.en, r.zh]), "舆情")
			not contains(r.en, "grade 5")
		}
	}
}
