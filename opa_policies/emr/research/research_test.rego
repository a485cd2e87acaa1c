package emr.research_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request

search(who, purpose, type, params) := f.with_params(f.req(who, purpose, "search-type", type, []), params)

with_ids(inp, ids) := object.union(inp, {"target": object.union(inp.target, {"ids": ids})})

# I.4: research and teaching find records by content, never by who the patient is, in any spelling.
test_identifying_searches_refused if {
	every case in [
		["Patient", {"identifier": ["MRN000003"]}],
		["Patient", {"identifier": ["urn:oid:2.16.156.emrguard.mrn|MRN000003"]}],
		["Patient", {"name": ["王"]}],
		["Patient", {"family:exact": ["王"]}],
		["Patient", {"given": ["淑英"]}],
		["Patient", {"phonetic": ["wang"]}],
		["Patient", {"telecom": ["13900000000"]}],
		["Patient", {"phone": ["13900000000"]}],
		["Patient", {"email": ["a@b.cn"]}],
		["Patient", {"address": ["北京"]}],
		["Patient", {"address-city": ["北京"]}],
		["Patient", {"birthdate": ["1980-01-02"]}],
		["Patient", {"birthdate": ["ge1980-01-02"]}],
		["Patient", {"birthdate": ["1980-01"]}],
		["Patient", {"birthdate": ["1980,1980-01-02"]}],
		["Patient", {"birthdate:exact": ["1980"]}],
		["RelatedPerson", {"name": ["王"]}],
		["Observation", {"identifier": ["ACC-1"]}],
		["Observation", {"subject.identifier": ["MRN000003"]}],
		["Observation", {"subject:Patient.name": ["王"]}],
		["Observation", {"patient.birthdate": ["1980-01-02"]}],
		["Observation", {"subject:identifier": ["MRN000003"]}],
		["Patient", {"_has:Observation:subject:identifier": ["ACC-1"]}],
		["Patient", {"_has:Observation:patient:_has:AuditEvent:entity:identifier": ["x"]}],
		["Coverage", {"dependent": ["02"]}],
	] {
		every who_purpose in [["sci-1", "HRESCH"], ["stu-001", "TRAIN"]] {
			d := request.decision with input as search(who_purpose[0], who_purpose[1], case[0], case[1])
			"search.identifying" in f.rules(d)
			f.well_formed(d)
		}
	}
}

# What the answer shows may be searched: the birth year, gender, codes; staff by name.
test_searches_by_what_is_shown_allowed if {
	every case in [
		["Patient", {"birthdate": ["1980"]}],
		["Patient", {"birthdate": ["ge1980", "le1990"]}],
		["Patient", {"birthdate:missing": ["true"]}],
		["Patient", {"gender": ["female"], "_count": ["20"]}],
		["Practitioner", {"name": ["李"]}],
		["Organization", {"name": ["人民医院"]}],
		["Observation", {"code": ["http://loinc.org|8867-4"]}],
	] {
		d := request.decision with input as search("sci-1", "HRESCH", case[0], case[1])
		not "search.identifying" in f.rules(d)
	}
}

# Clinicians search by identifiers as before; an exempt role is not de-identified.
test_identifying_searches_for_care if {
	d := request.decision with input as search("dr-li", "TREAT", "Patient", {"identifier": ["MRN000003"]})
	not "search.identifying" in f.rules(d)
	d2 := request.decision with input as search("sci-1", "HRESCH", "Patient", {"name": ["王"]})
		with data.emr.config.fields.exempt_roles.HRESCH as ["researcher"]
	not "search.identifying" in f.rules(d2)
}

test_identifying_search_in_batch_entry if {
	e := object.union(f.bentry("search-type", "Patient", []), {"params": {"identifier": ["MRN000003"]}})
	d := request.decision with input as f.batch("sci-1", "HRESCH", "batch", [e])
	some r in d.reasons
	r.rule == "search.identifying"
	startswith(r.en, "Bundle.entry[0]: ")
}

# I.4: pseudonymised answers, requests in pseudonyms: a real id is refused, a pseudonym's is not.
test_real_ids_refused_for_research if {
	base := f.read("sci-1", "HRESCH", "Patient", ["Patient/p1"])
	d := request.decision with input as with_ids(base, {"Patient/p1": false})
	f.rules(d) == {"pseudonym.real-id"}
	f.well_formed(d)
	some r in d.reasons
	r.detail == {"ids": ["Patient/p1"]}
	not contains(r.en, "p1") # the text names no id
	d2 := request.decision with input as with_ids(base, {"Patient/p1": true})
	d2.allow
	d3 := request.decision with input as with_ids(base, {"Patient/p1": true, "Encounter/e9": false})
	f.rules(d3) == {"pseudonym.real-id"}
}

# A patient the gateway found that no pseudonym named (a Parameters body, `patient/…` in lower case).
test_patients_not_named_by_pseudonym_refused if {
	base := f.req("sci-1", "HRESCH", "search-type", "Observation", ["Patient/p1"])
	d := request.decision with input as with_ids(base, {})
	f.rules(d) == {"pseudonym.real-id"}
	d2 := request.decision with input as with_ids(base, {"Observation/p1": true})
	f.rules(d2) == {"pseudonym.real-id"}
	d3 := request.decision with input as with_ids(base, {"Patient/p1": true})
	d3.allow
	d4 := request.decision with input as base # not the gateway's input (no ids): the fixtures
	d4.allow
	e := object.union(f.bentry("read", "Observation", ["Patient/p1"]), {"ids": {"Observation/o1": true}})
	d5 := request.decision with input as f.batch("sci-1", "HRESCH", "batch", [e])
	"pseudonym.real-id" in f.rules(d5)
}

test_real_ids_in_batch_entries if {
	e := object.union(f.bentry("read", "Observation", []), {"ids": {"Observation/o1": false}})
	d := request.decision with input as f.batch("sci-1", "HRESCH", "batch", [e])
	some r in d.reasons
	r.rule == "pseudonym.real-id"
	startswith(r.en, "Bundle.entry[0]: ")
}

# Teaching sees real ids (its answers are not pseudonymised); care names patients by id.
test_real_ids_for_other_purposes if {
	d := request.decision with input as with_ids(f.read("stu-001", "TRAIN", "Patient", ["Patient/p1"]), {"Patient/p1": false})
	not "pseudonym.real-id" in f.rules(d)
	d2 := request.decision with input as with_ids(f.read("dr-li", "TREAT", "Patient", ["Patient/p1"]), {"Patient/p1": false})
	d2.allow
}

test_selection if {
	data.emr.research.selection("Observation", "subject:Patient.name:exact") == {"type": "Patient", "name": "name", "modifier": "exact"}
	data.emr.research.selection("Observation", "subject.name") == {"type": "?", "name": "name", "modifier": ""}
	data.emr.research.selection("Patient", "_has:Observation:subject:identifier") == {"type": "Observation", "name": "identifier", "modifier": ""}
	data.emr.research.selection("Patient", "_has:Observation") == {"type": "Patient", "name": "_has", "modifier": "Observation"}
	data.emr.research.selection("Patient", "family:contains") == {"type": "Patient", "name": "family", "modifier": "contains"}
}
