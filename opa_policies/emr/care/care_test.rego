package emr.care_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request
import data.emr.response

# I.4: own department or care team.
test_department_or_care_team if {
	every p in ["Patient/p1", "Patient/p3", "Patient/vip"] {
		d := request.decision with input as f.read("dr-li", "TREAT", "Observation", [p])
		d.allow
	}
	d := request.decision with input as f.read("dr-li", "TREAT", "Observation", ["Patient/p2"])
	f.rules(d) == {"care.no-relationship"}
	f.well_formed(d)
	some r in d.reasons
	not contains(r.en, "Patient/p2") # the text names no patient: the detail does (audit only)
	r.detail.patients == ["Patient/p2"]
	contains(r.en, "X-Break-Glass-Reason")
	d2 := request.decision with input as f.read("dr-wu", "TREAT", "Observation", ["Patient/p1"])
	f.rules(d2) == {"care.no-relationship"}
}

test_every_patient_must_be_related if {
	d := request.decision with input as f.read("dr-li", "TREAT", "Observation", ["Patient/p1", "Patient/p2"])
	f.rules(d) == {"care.no-relationship"}
}

# Fail closed: a patient the gateway gave no context for is unrelated, also for unbound roles.
test_missing_context_is_unrelated if {
	d := request.decision with input as f.read("ph-1", "TREAT", "MedicationRequest", ["Patient/nobody"])
	f.rules(d) == {"care.no-relationship"}
	some r in d.reasons
	contains(r.en, "no context")
}

# Pharmacists, researchers, records officers are not bound to a care relationship (data).
test_unbound_roles if {
	every inp in [
		f.read("ph-1", "TREAT", "MedicationRequest", ["Patient/p2"]),
		f.read("sci-1", "HRESCH", "Observation", ["Patient/p2"]),
		f.read("rec-chen", "HOPERAT", "Observation", ["Patient/p2"]),
	] {
		d := request.decision with input as inp
		d.allow
	}
}

# TRAIN: only patients of the rotation's department (not the care team).
test_rotation_department if {
	d := request.decision with input as f.read("stu-001", "TRAIN", "Observation", ["Patient/p1"])
	d.allow
	d2 := request.decision with input as f.read("stu-001", "TRAIN", "Observation", ["Patient/p2"])
	f.rules(d2) == {"care.no-relationship"}
	some r in d2.reasons
	contains(r.en, "rotation")
}

# Break-the-glass: ETREAT/BTG with a reason opens the care relationship, and is alerted.
test_break_glass_with_reason if {
	every purpose in ["ETREAT", "BTG"] {
		d := request.decision with input as f.with_break_glass(f.read("nurse-zhao", purpose, "Observation", ["Patient/p2"]), "cardiac arrest, unconscious")
		d.allow
		d.obligations == [{
			"type": "alert", "event": "break-glass", "severity": "high", "patients": ["Patient/p2"],
			"en": sprintf("break-the-glass access (cardiac arrest, unconscious) by nurse-zhao for purpose %s: Patient/p2", [purpose]),
			"zh": sprintf("nurse-zhao 以 %s 为目的紧急破窗访问(理由:cardiac arrest, unconscious):Patient/p2", [purpose]),
		}]
	}
}

test_break_glass_needs_a_reason if {
	every reason in [null, "", "   "] {
		inp := object.union(f.read("nurse-zhao", "ETREAT", "Observation", ["Patient/p2"]), {"break_glass": {"reason": reason}})
		d := request.decision with input as inp
		f.rules(d) == {"care.no-relationship", "purpose.reason-required"}
		some r in d.reasons
		contains(r.en, "X-Break-Glass-Reason")
		d.obligations == []
	}
	d := request.decision with input as f.read("nurse-zhao", "BTG", "Observation", ["Patient/p2"])
	f.rules(d) == {"care.no-relationship", "purpose.reason-required"}
}

# No waiver for TREAT, nor for roles that cannot break the glass.
test_no_break_glass_for_treat if {
	d := request.decision with input as f.with_break_glass(f.read("nurse-zhao", "TREAT", "Observation", ["Patient/p2"]), "urgent")
	f.rules(d) == {"care.no-relationship"}
}

# A related patient needs no waiver: no alert.
test_break_glass_alert_only_for_unrelated if {
	d := request.decision with input as f.with_break_glass(f.read("dr-li", "ETREAT", "Observation", ["Patient/p1"]), "urgent")
	d.allow
	d.obligations == []
}

# Response: a clinician's Patient?name= search returns only related patients.
test_response_drops_unrelated_patients if {
	entries := [f.entry("Patient", ["Patient/p1"]), f.entry("Patient", ["Patient/p2"]), f.entry("Patient", ["Patient/p3"]), f.entry("Practitioner", []), f.entry("Patient", ["Patient/nobody"])]
	d := response.decision with input as f.resp("dr-li", "TREAT", entries)
	f.kept(d) == [true, false, true, true, false]
	d.verdicts[1].reasons[0].rule == "care.no-relationship"
	contains(d.verdicts[4].reasons[0].en, "no context")
	d.obligations == []
}

test_response_break_glass_alert if {
	entries := [f.entry("Observation", ["Patient/p1"]), f.entry("Observation", ["Patient/p2"]), f.entry("Observation", ["Patient/sealed"])]
	named := f.with_break_glass(f.req("nurse-zhao", "BTG", "search-type", "Observation", ["Patient/p2"]), "stroke")
	d := response.decision with input as object.union(named, {"entries": entries})
	f.kept(d) == [true, true, false]
	[o.event | some o in d.obligations] == ["break-glass", "seal-access-denied"]
	d.obligations[0].patients == ["Patient/p2"]
}

# Break-the-glass reaches the patients the request names, never a whole search's worth.
test_break_glass_does_not_open_searches_across_patients if {
	entries := [f.entry("Observation", ["Patient/p1"]), f.entry("Observation", ["Patient/p2"])]
	d := response.decision with input as f.with_break_glass(f.resp("nurse-zhao", "BTG", entries), "stroke")
	f.kept(d) == [true, false]
	d.obligations == []
}

test_waiver_and_reach_sets if {
	inp := f.with_break_glass(f.read("nurse-zhao", "ETREAT", "Observation", ["Patient/p2"]), "x")
	data.emr.care.waiver == {"nurse"} with input as inp
	data.emr.care.waiver_only == {"Patient/p2"} with input as inp
	data.emr.care.waiver_only == set() with input as f.with_break_glass(f.read("nurse-zhao", "ETREAT", "Observation", []), "x")
	data.emr.care.waiver == set() with input as f.read("nurse-zhao", "ETREAT", "Observation", [])
}

# The request's refusal names no patient (a read by id never named one) and no rotation's
# department: they are in detail (audit only). By id and by search alike: one text.
test_request_reason_names_no_patient if {
	d := request.decision with input as f.read("dr-li", "TREAT", "Condition", ["Patient/p2", "Patient/nobody"])
	[r] := d.reasons
	r.detail == {"patients": ["Patient/nobody", "Patient/p2"], "no_context": ["Patient/nobody"], "rotation_departments": []}
	not contains(concat(" ", [r.en, r.zh]), "Patient/")
	contains(r.en, "no context")
	s := request.decision with input as f.with_params(f.req("dr-li", "TREAT", "search-type", "Condition", ["Patient/p2", "Patient/nobody"]), {"patient": ["Patient/p2"]})
	[s.reasons[0].en, s.reasons[0].zh] == [r.en, r.zh]
	t := request.decision with input as f.req("stu-001", "TRAIN", "search-type", "Observation", ["Patient/p2"])
	[rt] := t.reasons
	rt.detail.rotation_departments == ["cardiology"]
	not contains(rt.en, "cardiology")
}
