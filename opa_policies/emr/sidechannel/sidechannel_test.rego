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
		f.rules(d2) == {"search.side-channel"}
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
