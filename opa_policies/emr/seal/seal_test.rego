package emr.seal_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request
import data.emr.response

denied_alert := {
	"type": "alert", "event": "seal-access-denied", "severity": "high", "patients": ["Patient/sealed"],
	"en": "nurse-zhao tried to use the sealed records of Patient/sealed",
	"zh": "nurse-zhao 试图访问已封存的 Patient/sealed 的病历",
}

# I.4 封存: refused by every route to everyone but the authorised.
test_sealed_refused_by_every_route if {
	every inp in [
		f.read("nurse-zhao", "TREAT", "Patient", ["Patient/sealed"]),
		f.req("nurse-zhao", "TREAT", "search-type", "Observation", ["Patient/sealed"]),
		f.req("nurse-zhao", "TREAT", "history-instance", "Observation", ["Patient/sealed"]),
		f.op("nurse-zhao", "TREAT", "$everything", "Patient", ["Patient/sealed"]),
		f.req("nurse-zhao", "TREAT", "create", "Observation", ["Patient/sealed"]),
		f.req("nurse-zhao", "TREAT", "update", "Observation", ["Patient/sealed"]),
		f.with_break_glass(f.read("nurse-zhao", "BTG", "Patient", ["Patient/sealed"]), "emergency"),
	] {
		d := request.decision with input as inp
		not d.allow
		"seal.sealed" in f.rules(d)
		d.obligations == [denied_alert]
		f.well_formed(d)
	}
}

test_sealed_refused_in_batch_entries if {
	d := request.decision with input as f.batch("nurse-zhao", "TREAT", "batch", [f.bentry("read", "Patient", ["Patient/p1"]), f.bentry("read", "Observation", ["Patient/sealed"])])
	f.rules(d) == {"seal.sealed"}
	some r in d.reasons
	startswith(r.en, "Bundle.entry[1]: ")
	not contains(r.en, "舆情-2026-031") # the case and the patient are in detail (audit only)
	not contains(r.zh, "Patient/sealed")
	r.detail == {"patients": ["Patient/sealed"], "cases": ["舆情-2026-031"], "discreet": true}
}

# Unbound roles are refused too (records officer not named by the seal).
test_unbound_role_refused_unless_authorised if {
	d := request.decision with input as f.read("ph-1", "TREAT", "Patient", ["Patient/sealed"])
	f.rules(d) == {"seal.sealed"}
	s := {"id": "rec-li", "roles": ["records_officer"], "dept": "records", "grants": []}
	d2 := request.decision with input as f.with_subject(f.read("rec-chen", "HOPERAT", "Patient", ["Patient/sealed"]), s)
	f.rules(d2) == {"seal.sealed"}
}

# Authorised personnel keep access, and their access is alerted (medium).
test_authorised_access_alerted if {
	d := request.decision with input as f.read("rec-chen", "HOPERAT", "Patient", ["Patient/sealed"])
	d.allow
	[[o.event, o.severity, o.patients] | some o in d.obligations] == [["seal-access", "medium", ["Patient/sealed"]]]
	d2 := request.decision with input as f.read("dr-li", "TREAT", "Patient", ["Patient/sealed"])
	d2.allow
}

test_response_sealed_entries if {
	entries := [f.entry("Observation", ["Patient/p1"]), f.entry("Observation", ["Patient/sealed"])]
	d := response.decision with input as f.resp("nurse-zhao", "TREAT", entries)
	f.kept(d) == [true, false]
	[r.rule | some r in d.verdicts[1].reasons] == ["seal.sealed"]
	d.obligations == [denied_alert]
	d2 := response.decision with input as f.resp("dr-li", "TREAT", entries)
	f.kept(d2) == [true, true]
	[o.event | some o in d2.obligations] == ["seal-access"]
}

test_seal_sets if {
	data.emr.seal.denied == {"Patient/sealed"} with input as f.read("nurse-zhao", "TREAT", "Patient", [])
	data.emr.seal.allowed == {"Patient/sealed"} with input as f.read("dr-li", "TREAT", "Patient", [])
	data.emr.seal.denied == set() with input as f.read("dr-li", "TREAT", "Patient", [])
}

test_case_reference_in_detail_only if {
	ctx := object.union(object.remove(f.patients["Patient/sealed"], ["seal"]), {"seal": {"authorised": [], "case_ref": "舆情-2026-099"}})
	inp := object.remove(f.read("nurse-zhao", "TREAT", "Patient", ["Patient/sealed"]), ["patients"])
	d := request.decision with input as object.union(inp, {"patients": {"Patient/sealed": ctx}})
	some r in d.reasons
	r.detail.cases == ["舆情-2026-099"]
	not contains(concat(" ", [r.en, r.zh]), "舆情")
}
