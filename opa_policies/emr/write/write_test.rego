package emr.write_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request

write(who, purpose, interaction, type, pts) := f.req(who, purpose, interaction, type, pts)

# I.3: who may write which types is data.
test_clinical_writes if {
	every inp in [
		write("nurse-zhao", "TREAT", "create", "Observation", ["Patient/p1"]),
		f.with_break_glass(write("nurse-zhao", "ETREAT", "patch", "Observation", ["Patient/p1"]), "arrest"),
		write("dr-li", "TREAT", "update", "Condition", ["Patient/p1"]),
		write("ph-1", "TREAT", "create", "MedicationDispense", ["Patient/p2"]),
		write("rec-chen", "HOPERAT", "update", "Binary", ["Patient/p2"]),
	] {
		d := request.decision with input as inp
		d.allow
	}
}

test_types_a_role_may_not_write if {
	every inp in [
		write("nurse-zhao", "TREAT", "create", "Condition", ["Patient/p1"]),
		write("ph-1", "TREAT", "create", "Observation", ["Patient/p2"]),
		write("dr-li", "TREAT", "create", "Binary", ["Patient/p1"]),
	] {
		d := request.decision with input as inp
		f.rules(d) == {"write.not-permitted"}
		f.well_formed(d)
	}
}

# Deletes only by records officers.
test_deletes if {
	d := request.decision with input as write("rec-chen", "HOPERAT", "delete", "Observation", ["Patient/p2"])
	d.allow
	every who in ["nurse-zhao", "dr-li"] {
		d2 := request.decision with input as write(who, "TREAT", "delete", "Observation", ["Patient/p1"])
		f.rules(d2) == {"write.not-permitted"}
	}
	d3 := request.decision with input as write("ven-1", "HOPERAT", "delete", "Device", [])
	f.rules(d3) == {"write.not-permitted"}
}

# Records are written for care or records management, not while teaching or researching.
test_write_purpose if {
	every inp in [
		write("stu-001", "TRAIN", "create", "Observation", ["Patient/p1"]),
		write("dr-li", "TRAIN", "create", "Observation", ["Patient/p1"]),
		write("sci-1", "HRESCH", "update", "Observation", ["Patient/p2"]),
	] {
		d := request.decision with input as inp
		f.rules(d) == {"write.purpose"}
	}
}

# Writes need the care relationship too.
test_write_needs_care_relationship if {
	d := request.decision with input as write("dr-li", "TREAT", "update", "Condition", ["Patient/p2"])
	f.rules(d) == {"care.no-relationship"}
}

# II.1: a vendor writes only what its agreement names.
test_vendor_writes if {
	d := request.decision with input as write("ven-1", "HOPERAT", "update", "Device", [])
	f.rules(d) == {"grant.out-of-scope"}
	g := object.union(f.vendor_grant, {"scope": {"interactions": ["read", "update"]}})
	s := object.union(f.subjects["ven-1"], {"grants": [g]})
	d2 := request.decision with input as f.with_subject(write("ven-1", "HOPERAT", "update", "Device", []), s)
	d2.allow
}

# I.3: conditional writes are refused, in a request and in a transaction entry.
test_conditional_writes_refused if {
	inp := object.union(write("nurse-zhao", "TREAT", "update", "Observation", ["Patient/p1"]), {"action": {"conditional": true}})
	d := request.decision with input as inp
	f.rules(d) == {"write.conditional"}
	inp2 := object.union(write("nurse-zhao", "TREAT", "create", "Observation", ["Patient/p1"]), {"target": {"if_none_exist": {"identifier": ["x"]}}})
	d2 := request.decision with input as inp2
	f.rules(d2) == {"write.conditional"}
	e := object.union(f.bentry("create", "Observation", ["Patient/p1"]), {"conditional": true})
	d3 := request.decision with input as f.batch("nurse-zhao", "TREAT", "transaction", [e])
	f.rules(d3) == {"write.conditional"}
	some r in d3.reasons
	startswith(r.en, "Bundle.entry[0]: ")
}

test_label_removal_needs_records_officer if {
	inp := {
		"subject": {"id": "dr-li", "roles": ["physician"], "dept": "cardiology", "grants": []},
		"purpose": "TREAT", "time": "2026-12-01T08:00:00Z",
		"action": {"interaction": "patch", "method": "PATCH", "level": "instance", "operation": null, "conditional": false},
		"target": {"type": "Observation", "id": "o1", "patients": [], "params": {}, "entries": [], "labels_removed": ["V"]},
		"patients": {},
	}
	some r in data.emr.write.deny with input as inp
	r.rule == "write.label-removed"
	r.detail == {"labels_removed": ["V"]} # the current version's labels: in detail, not the text
	not contains(r.en, "V")
	officer := object.union(inp, {"subject": {"id": "rec-chen", "roles": ["records_officer"], "dept": "records", "grants": []}})
	not any_label_denial with input as officer
}

any_label_denial if {
	some r in data.emr.write.deny
	r.rule == "write.label-removed"
}
