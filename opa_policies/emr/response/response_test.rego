package emr.response_test

import rego.v1

import data.emr.response

v_label := {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}

inp(roles, purpose, entries) := {
	"subject": {"id": "u1", "roles": roles},
	"purpose": purpose,
	"entries": entries,
}

test_one_verdict_per_entry_in_order if {
	entries := [{"type": "Patient", "security": []}, {"type": "Condition", "security": []}, {"type": "Observation", "security": []}]
	d := response.decision with input as inp(["pharmacist"], "TREAT", entries)
	[v.keep | some v in d.verdicts] == [true, false, true]
}

# I.4 minimum necessary: types outside the role's scope are dropped wherever they appear.
test_pharmacist_loses_conditions if {
	d := response.decision with input as inp(["pharmacist"], "TREAT", [{"type": "Condition", "security": []}])
	v := d.verdicts[0]
	not v.keep
	v.reasons[0].rule == "type.not-visible"
	v.reasons[0].clause == "I.4"
}

test_pharmacist_patient_redacted if {
	d := response.decision with input as inp(["pharmacist"], "TREAT", [{"type": "Patient", "security": []}])
	d.verdicts[0].keep
	d.verdicts[0].redact == ["address", "contact", "photo", "telecom"]
}

test_physician_sees_everything_unredacted if {
	d := response.decision with input as inp(["physician"], "TREAT", [{"type": "Patient", "security": []}, {"type": "Condition", "security": [v_label]}])
	[v.keep | some v in d.verdicts] == [true, true]
	[v.redact | some v in d.verdicts] == [[], []]
}

# I.4 graded access: very restricted records only for the listed roles.
test_nurse_loses_very_restricted if {
	d := response.decision with input as inp(["nurse"], "TREAT", [{"type": "Condition", "security": [v_label]}, {"type": "Condition", "security": []}])
	[v.keep | some v in d.verdicts] == [false, true]
	d.verdicts[0].reasons[0].rule == "label.very-restricted"
}

test_other_confidentiality_system_ignored if {
	d := response.decision with input as inp(["nurse"], "TREAT", [{"type": "Condition", "security": [{"system": "urn:other", "code": "V"}]}])
	d.verdicts[0].keep
}

test_student_gets_deidentified_patient if {
	d := response.decision with input as inp(["student"], "TRAIN", [{"type": "Patient", "security": []}, {"type": "Observation", "security": []}])
	d.verdicts[0].redact == ["address", "contact", "identifier", "name", "patient.display", "photo", "subject.display", "telecom"]
	d.verdicts[1].redact == ["patient.display", "subject.display"]
}

# A field is withheld only if every active role withholds it.
test_redaction_is_the_intersection_of_roles if {
	d := response.decision with input as inp(["student", "resident"], "TRAIN", [{"type": "Patient", "security": []}])
	d.verdicts[0].redact == []
}

test_no_active_role_drops_everything if {
	d := response.decision with input as inp(["student"], "TREAT", [{"type": "Patient", "security": []}])
	not d.verdicts[0].keep
}

test_empty_entries if {
	d := response.decision with input as inp(["nurse"], "TREAT", [])
	d.verdicts == []
}

test_binary_withheld_unless_listed if {
	d := response.decision with input as inp(["physician"], "TREAT", [{"type": "Binary", "security": []}])
	not d.verdicts[0].keep
	d2 := response.decision with input as inp(["records_officer"], "HOPERAT", [{"type": "Binary", "security": []}])
	d2.verdicts[0].keep
}
