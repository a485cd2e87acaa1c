package emr.purpose_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request

# I.2: care, teaching, research and hospital management are purposes of use.
test_each_permitted_purpose_is_accepted if {
	every who, purpose in {"dr-li": "TREAT", "nurse-zhao": "ETREAT", "res-1": "BTG", "stu-001": "TRAIN", "sci-1": "HRESCH", "rec-chen": "HOPERAT"} {
		d := request.decision with input as f.with_break_glass(f.read(who, purpose, "Patient", ["Patient/p1"]), "emergency")
		d.allow
	}
}

# I.4: the emergency purposes need a stated reason, even for a related patient (their caps are higher).
test_emergency_purpose_needs_a_reason if {
	every purpose in ["ETREAT", "BTG"] {
		d := request.decision with input as f.read("nurse-zhao", purpose, "Observation", ["Patient/p1"])
		not d.allow
		"purpose.reason-required" in f.rules(d)
	}
}

test_missing_purpose_refused if {
	every inp in [
		f.read("dr-li", null, "Patient", ["Patient/p1"]),
		f.read("dr-li", "", "Patient", ["Patient/p1"]),
		object.remove(f.read("dr-li", "TREAT", "Patient", ["Patient/p1"]), ["purpose"]),
		f.read("dr-li", 42, "Patient", ["Patient/p1"]),
	] {
		d := request.decision with input as inp
		not d.allow
		f.rules(d) == {"purpose.required"}
		some r in d.reasons
		contains(r.en, "X-Purpose-Of-Use")
		r.clause == "I.2"
	}
}

# I.2: marketing, payment or an unknown code is not care, teaching or research.
test_other_purposes_refused if {
	every p in ["HMARKT", "HPAYMT", "XYZ", "treat"] {
		d := request.decision with input as f.read("dr-li", p, "Patient", ["Patient/p1"])
		not d.allow
		f.rules(d) == {"purpose.not-permitted"}
		f.well_formed(d)
	}
}

test_capabilities_need_no_purpose if {
	d := request.decision with input as f.req("x", null, "capabilities", null, [])
	d.allow
	d.reasons == []
}

# Which roles may claim which purpose is data.
test_claimants if {
	data.emr.purpose.claimants == {"physician"} with input as f.read("dr-li", "TRAIN", "Patient", [])
	data.emr.purpose.claimants == set() with input as f.read("stu-001", "TREAT", "Patient", [])
	data.emr.purpose.claimants == set() with input as f.read("dr-li", "HMARKT", "Patient", [])
	data.emr.purpose.claimants == {"nurse"} with input as f.read("nurse-zhao", "BTG", "Patient", [])
}
