package emr.sidechannel_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request

search(who, purpose, params) := f.with_params(f.req(who, purpose, "search-type", "Observation", []), params)

# I.4 no side channels: _has, chained parameters and _filter only for operators who see grade 5.
test_reference_searches_below_grade_5 if {
	every params in [
		{"_has:Condition:patient:code": ["B20"]},
		{"subject.name": ["王"]},
		{"subject:Patient.name": ["王"]},
		{"_filter": ["code eq B20"]},
		{"_has": ["x"]},
		{"_filter:exact": ["x"]},
	] {
		d := request.decision with input as search("nurse-zhao", "TREAT", params)
		f.rules(d) == {"search.side-channel"}
		f.well_formed(d)
		d2 := request.decision with input as search("dr-li", "TRAIN", params)
		f.rules(d2) - {"search.identifying"} == {"search.side-channel"} # a chain by name: emr.research too
		d3 := request.decision with input as search("dr-li", "TREAT", params)
		d3.allow
	}
}

test_ordinary_parameters_allowed if {
	d := request.decision with input as search("nurse-zhao", "TREAT", {"code": ["8867-4"], "date:ge": ["2026-01-01"], "_sort": ["-date"]})
	d.allow
}

test_side_channel_in_batch_entry if {
	e := object.union(f.bentry("search-type", "Observation", []), {"params": {"subject.name": ["王"]}})
	d := request.decision with input as f.batch("nurse-zhao", "TREAT", "batch", [e])
	f.rules(d) == {"search.side-channel"}
}

# GraphQL answers cannot be filtered per resource: refused unless a role is listed (none).
test_graphql_refused if {
	d := request.decision with input as f.req("dr-li", "TREAT", "graphql", null, [])
	f.rules(d) == {"graphql.not-permitted"}
	d2 := request.decision with input as f.op("dr-li", "TREAT", "$graphql", null, [])
	f.rules(d2) == {"graphql.not-permitted"}
	d3 := request.decision with input as f.req("dr-li", "TREAT", "graphql", null, []) with data.emr.config.sidechannel.graphql_roles as ["physician"]
	d3.allow
}

# II.2: $export only under an export grant in force covering the purpose and every type.
test_export if {
	exp := f.with_params(f.op("rec-chen", "HOPERAT", "$export", null, []), {"_type": ["Patient,Observation"]})
	d := request.decision with input as exp
	d.allow
	d2 := request.decision with input as f.with_params(exp, {"_type": ["Patient,Condition"]})
	f.rules(d2) == {"export.no-grant"}
	f.well_formed(d2)
	d3 := request.decision with input as f.with_params(exp, {})
	f.rules(d3) == {"export.no-grant"}
	d4 := request.decision with input as f.with_time(exp, "2026-12-02T00:00:00Z")
	f.rules(d4) == {"export.no-grant"}
	d5 := request.decision with input as f.with_params(f.op("dr-li", "TREAT", "$export", null, []), {"_type": ["Patient"]})
	f.rules(d5) == {"export.no-grant"}
}

# A count answers with a number the per-resource filter cannot check.
test_summary_count_refused if {
	d := request.decision with input as search("dr-li", "TREAT", {"_summary": ["count"]})
	f.rules(d) == {"search.count-only"}
	d2 := request.decision with input as search("dr-li", "TREAT", {"_summary": ["text"]})
	d2.allow
}

# Probing by a sensitive code above the operator's grade (security review: paging links told).
test_search_by_sensitive_code_above_grade_refused if {
	every code in ["B20", "http://hl7.org/fhir/sid/icd-10|B20.1", "|Z21", "icd|F32,B24"] {
		inp := object.union(f.req("nurse-zhao", "TREAT", "search-type", "Condition", ["Patient/p1"]), {"target": {"params": {"code": [code]}}})
		d := request.decision with input as inp
		"search.sensitive-code" in f.rules(d)
	}
	ok := object.union(f.req("nurse-zhao", "TREAT", "search-type", "Condition", ["Patient/p1"]), {"target": {"params": {"code": ["J45"]}}})
	d2 := request.decision with input as ok
	d2.allow
	md := object.union(f.req("dr-li", "TREAT", "search-type", "Condition", ["Patient/p1"]), {"target": {"params": {"code": ["B20"]}}})
	d3 := request.decision with input as md
	d3.allow
}

# Nothing leaks (class 2): every spelling of a search by graded content is refused below its grade.
condition_search(who, purpose, params) := f.with_params(f.req(who, purpose, "search-type", "Condition", ["Patient/p1"]), params)

graded_spellings := [
	{"code": ["HTTP://HL7.org/fhir/sid/icd-10/|b20.1"]}, # canonical system, lower-case code
	{"code": ["urn:oid:2.16.840.1.113883.6.3|B201"]}, # HL7's OID for ICD-10, undotted
	{"code": ["urn:oid:2.16.840.1.113883.6.90|F10.2"]}, # ICD-10-CM
	{"code": ["urn:oid:2.16.156.10011.2.3.3.11|z21"]}, # the national edition
	{"code": ["F32"]}, # no system, sensitive in ICD-10: the top grade
	{"code": ["http://hl7.org/fhir/sid/icd-10|"]}, # every code of the system
	{"code": ["J45", "I10,B24"]}, # the highest over values and comma lists
	{"code:not": ["J45"]}, {"code:in": ["http://example.org/ValueSet/x"]}, {"code:below": ["B2"]},
	{"code:above": ["B20.1"]}, {"code:text": ["hiv"]}, {"code:of-type": ["x|y|z"]},
	{"Code": ["B20"]}, {"reason-code": ["B20"]}, {"value-concept": ["http://snomed.info/sct|86406008"]},
	{"code-value-concept": ["http://loinc.org|51969-4$http://snomed.info/sct|x"]}, {"combo-code": ["HTTP://LOINC.ORG|51969-4"]},
	{"evidence": ["|Z21"]}, {"category:not": ["problem-list-item"]},
	{"_security": ["V"]}, {"_security": ["urn:oid:2.16.840.1.113883.5.4|hiv"]}, {"_tag": ["HIV"]},
	{"_security:not": ["N"]}, {"_security": ["http://terminology.hl7.org/CodeSystem/v3-Confidentiality|"]},
	{"_text": ["HIV"]}, {"_content": ["艾滋病"]},
	{"code": "B20"}, # a value the gateway would send as an array: read as one value
]

test_graded_search_spellings_refused_for_grade_4 if {
	every params in graded_spellings {
		d := request.decision with input as condition_search("nurse-zhao", "TREAT", params)
		f.rules(d) == {"search.sensitive-code"}
		f.well_formed(d)
		d2 := request.decision with input as condition_search("dr-li", "TREAT", params)
		d2.allow
	}
}

# Exact codes and labels count as their own grade; what selects nothing graded is not refused.
test_graded_search_exact_grades if {
	every params in [
		{"code": ["http://hl7.org/fhir/sid/icd-10|F32.1"]}, {"code": ["https://hl7.org/fhir/sid/icd-10|a51"]},
		{"_security": ["R"]}, {"_tag": ["http://hl7.org/fhir/v3/ActCode|PSY"]},
	] {
		d := request.decision with input as condition_search("nurse-zhao", "TREAT", params)
		d.allow
		d2 := request.decision with input as condition_search("stu-001", "TRAIN", params)
		"search.sensitive-code" in f.rules(d2)
	}
	every params in [
		{"code": ["J45"]}, {"code": ["urn:other|B20"]}, {"category": ["food"]}, {"code:missing": ["true"]},
		{"status:not": ["resolved"]}, {"code": [""]}, {"_security": ["|"]}, {"_security": ["N"]},
		{"code": ["urn:other|"]}, {"patient": ["B20"]},
	] {
		d := request.decision with input as condition_search("stu-001", "TRAIN", params)
		d.allow
	}
}

# The refusal names what the requester sent and keeps each parameter's grade in detail.
test_graded_search_reason_and_detail if {
	d := request.decision with input as condition_search("nurse-zhao", "TREAT", {"code:not": ["J45"], "_security": ["R"], "date": ["ge2026"]})
	[r] := d.reasons
	contains(r.en, "code:not")
	not contains(r.en, "_security") # grade 4: within the nurse's cap
	r.detail == {"grades": {"code:not": 5, "_security": 4}}
	e := object.union(f.bentry("search-type", "Observation", ["Patient/p1"]), {"params": {"_tag": ["V"]}})
	d2 := request.decision with input as f.batch("nurse-zhao", "TREAT", "batch", [e])
	[r2] := d2.reasons
	startswith(r2.en, "Bundle.entry[0]: ")
	r2.rule == "search.sensitive-code"
}
