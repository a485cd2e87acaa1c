package emr.grading_test

import rego.v1

import data.emr.fixtures as f
import data.emr.response

# The grade of each entry, as the records officer (who sees every grade) gets it.
grades(entries) := [v.grade | some v in d.verdicts] if {
	d := response.decision with input as f.resp("rec-chen", "HOPERAT", entries)
}

test_base_grade_per_type if {
	grades([
		f.entry("Organization", []), f.entry("Practitioner", []), f.entry("Encounter", ["Patient/p1"]),
		f.entry("Patient", ["Patient/p1"]), f.entry("Observation", ["Patient/p1"]), f.entry("SomethingNew", []),
	]) == [1, 1, 2, 3, 3, 3]
}

# I.4: sensitive codes raise the grade, matched by prefix.
test_sensitive_codes if {
	codes := ["B20", "B20.1", "B24", "Z21", "F32.1", "F10.2", "F19", "A51", "A64", "O04.5", "A49", "b20", "I21"]
	grades([f.coded("Condition", ["Patient/p1"], f.icd, c) | some c in codes]) == [5, 5, 5, 5, 4, 5, 5, 4, 4, 4, 3, 5, 3]
}

test_code_systems if {
	grades([
		f.coded("Condition", ["Patient/p1"], "http://hl7.org/fhir/sid/icd-10-cn", "B21"),
		f.coded("Condition", ["Patient/p1"], "urn:other", "B20"),
		f.coded("Observation", ["Patient/p1"], "http://loinc.org", "51969-4"),
		f.coded("Observation", ["Patient/p1"], "http://loinc.org", "8867-4"),
		f.coded("Condition", ["Patient/p1"], f.icd, 20),
	]) == [5, 3, 5, 3, 3]
}

# Security labels: confidentiality R/V, sensitivity HIV/ETH/SUD/SDV/GDIS (5), PSY/STD/SEX (4).
test_security_labels if {
	labels := [[f.conf, "R"], [f.conf, "V"], [f.conf, "N"], [f.actcode, "HIV"], [f.actcode, "GDIS"], [f.actcode, "PSY"], [f.actcode, "SEX"], ["urn:other", "V"]]
	grades([f.labelled("Observation", ["Patient/p1"], l[0], l[1]) | some l in labels]) == [4, 5, 3, 5, 5, 4, 4, 3]
}

test_tags_raise_too if {
	e := object.union(f.entry("Observation", ["Patient/p1"]), {"tags": [{"system": f.actcode, "code": "ETH"}]})
	grades([e]) == [5]
}

# Patient flags VIP and staff: at least grade 4 for every record of the patient.
test_patient_flags if {
	grades([
		f.entry("Observation", ["Patient/vip"]), f.entry("Encounter", ["Patient/staff"]),
		f.entry("Practitioner", []), f.entry("Observation", ["Patient/p1", "Patient/vip"]),
	]) == [4, 4, 1, 4]
}

# The highest that applies.
test_highest_wins if {
	e := object.union(f.coded("Condition", ["Patient/vip"], f.icd, "F32"), {"security": [{"system": f.conf, "code": "V"}]})
	grades([e]) == [5]
}

test_request_floor if {
	t := {"kind": "read", "type": "Observation", "patients": {"Patient/vip"}}
	data.emr.grading.floor(t) == 4 with input as f.read("dr-li", "TREAT", "Observation", [])
	data.emr.grading.floor({"kind": "read", "type": "", "patients": set()}) == 1 with input as f.read("dr-li", "TREAT", "Observation", [])
	data.emr.grading.floor({"kind": "container", "type": "", "patients": {"Patient/staff"}}) == 4 with input as f.read("dr-li", "TREAT", "Observation", [])
}

# Nothing leaks (class 1): a system is known in every spelling of it, a code in every form.
test_canonical_code_systems if {
	grades([
		f.coded("Condition", ["Patient/p1"], "HTTP://HL7.org/fhir/sid/icd-10", "b20"),
		f.coded("Condition", ["Patient/p1"], "http://hl7.org/fhir/sid/icd-10/", "B201"),
		f.coded("Condition", ["Patient/p1"], "urn:oid:2.16.840.1.113883.6.3", "F32.1"),
		f.coded("Condition", ["Patient/p1"], "URN:OID:2.16.840.1.113883.6.90", " f10.2 "),
		f.coded("Condition", ["Patient/p1"], "urn:oid:2.16.156.10011.2.3.3.11", "Z21"),
		f.coded("Observation", ["Patient/p1"], "HTTP://LOINC.ORG/", "51969-4"),
		f.coded("Condition", ["Patient/p1"], "urn:oid:2.16.840.1.113883.6.96", "86406008"),
		f.coded("Condition", ["Patient/p1"], "http://hl7.org/fhir/sid/icd-10x", "B20"),
	]) == [5, 5, 4, 5, 5, 5, 5, 3]
}

# A coding without a system could be any system's: graded as the highest, where it has the shape.
test_systemless_codings if {
	grades([
		f.coded("Condition", ["Patient/p1"], "", "B20"), f.coded("Condition", ["Patient/p1"], "", "FOOD"),
		f.coded("Observation", ["Patient/p1"], "", "51969-4"), f.coded("Condition", ["Patient/p1"], "", "F32"),
	]) == [5, 3, 5, 4]
}

test_canonical_label_systems if {
	labels := [
		["HTTP://terminology.hl7.org/CodeSystem/v3-Confidentiality", "V"], ["urn:oid:2.16.840.1.113883.5.25", "r"],
		["http://hl7.org/fhir/v3/ActCode", "HIV"], ["urn:oid:2.16.840.1.113883.5.4", "psy"], ["", "V"], ["", "N"],
	]
	grades([f.labelled("Observation", ["Patient/p1"], l[0], l[1]) | some l in labels]) == [5, 4, 5, 4, 5, 3]
}

# The data is kept in canonical form (a key that is not could never match).
test_classification_data_canonical if {
	cfg := data.emr.config.classification
	every s, alias in cfg.code_systems {
		s == trim(lower(s), " /")
		alias in ({a | some a, _ in cfg.sensitive_codes} | {a | some a, _ in cfg.security_labels})
	}
	every _, table in cfg.sensitive_codes {
		every code, _ in table {
			code == replace(upper(trim_space(code)), ".", "")
		}
	}
	every _, table in cfg.security_labels {
		every code, _ in table {
			code == upper(code)
		}
	}
}

# Odd shapes grade nothing and never fail the decision.
test_odd_codings if {
	e := object.union(f.entry("Observation", ["Patient/p1"]), {
		"codes": [{"system": 7, "code": "B20"}, {"system": f.icd, "code": 20}, "B20"],
		"security": [{"system": f.conf, "code": 5}, {"system": null, "code": "V"}],
	})
	grades([e]) == [3]
}
