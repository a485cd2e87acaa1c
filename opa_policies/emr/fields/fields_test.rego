package emr.fields_test

import rego.v1

import data.emr.fixtures as f
import data.emr.response

identifiers := ["address", "contact", "identifier", "name", "note", "photo", "telecom"]

# Every type loses its identifiers (MRN, accession, insurance numbers) and free-text notes.
any_type := ["identifier", "note"]

year := {"op": "year", "path": "birthDate"}

no_display := {"op": "drop_reference_display"}

# I.4 field-level minimum necessary: teaching sees no direct identifiers.
test_training_deidentifies if {
	d := response.decision with input as f.resp("stu-001", "TRAIN", [f.entry("Patient", ["Patient/p1"]), f.entry("Observation", ["Patient/p1"])])
	f.kept(d) == [true, true]
	d.verdicts[0].redact == identifiers
	d.verdicts[0].transform == [year, no_display]
	d.verdicts[0].pseudonymise == false
	d.verdicts[1].redact == any_type
	d.verdicts[1].transform == [no_display]
}

# A physician teaching gets the same.
test_training_deidentifies_for_physicians_too if {
	d := response.decision with input as f.resp("dr-li", "TRAIN", [f.entry("Patient", ["Patient/p1"])])
	d.verdicts[0].redact == identifiers
}

# Research: the same, with pseudonyms.
test_research_pseudonymises if {
	d := response.decision with input as f.resp("sci-1", "HRESCH", [f.entry("Patient", ["Patient/p2"]), f.entry("Condition", ["Patient/p2"])])
	f.kept(d) == [true, true]
	d.verdicts[0].redact == identifiers
	d.verdicts[0].transform == [year, no_display]
	[v.pseudonymise | some v in d.verdicts] == [true, true]
}

test_care_sees_everything if {
	d := response.decision with input as f.resp("dr-li", "TREAT", [f.entry("Patient", ["Patient/p1"])])
	d.verdicts[0].redact == []
	d.verdicts[0].transform == []
	d.verdicts[0].pseudonymise == false
}

# A redaction applies only if every active role gets it.
test_exempt_role_lifts_redaction if {
	d := response.decision with input as f.resp("dr-li", "TRAIN", [f.entry("Patient", ["Patient/p1"])]) with data.emr.config.fields.exempt_roles as {"TRAIN": ["physician"]}
	d.verdicts[0].redact == []
	d.verdicts[0].transform == []
}

# II.1: a vendor sees only the elements its agreement names; a type with none is withheld.
test_vendor_keep_only if {
	d := response.decision with input as f.resp("ven-1", "HOPERAT", [f.entry("Device", []), f.entry("Encounter", ["Patient/p1"])])
	f.kept(d) == [true, false]
	d.verdicts[0].transform == [{"op": "keep_only", "fields": ["id", "manufacturer", "status"]}]
	[r.rule | some r in d.verdicts[1].reasons] == ["grant.no-fields"]
	d.verdicts[1].reasons[0].clause == "II.1"
}

# keep_only only when every active role is scoped by grants.
test_keep_only_needs_every_role_scoped if {
	s := object.union(f.subjects["ven-1"], {"roles": ["vendor", "records_officer"]})
	d := response.decision with input as f.with_subject(f.resp("ven-1", "HOPERAT", [f.entry("Device", []), f.entry("Encounter", ["Patient/p1"])]), s)
	f.kept(d) == [true, true]
	d.verdicts[0].transform == []
}

# Relatives and insurance: their names and numbers identify the patient too.
test_training_deidentifies_related_people_and_coverage if {
	d := response.decision with input as f.resp("sci-1", "HRESCH", [f.entry("RelatedPerson", ["Patient/p2"]), f.entry("Coverage", ["Patient/p2"])])
	"name" in d.verdicts[0].redact
	"telecom" in d.verdicts[0].redact
	"subscriberId" in d.verdicts[1].redact
	"identifier" in d.verdicts[1].redact
}
