package emr.grants_test

import rego.v1

import data.emr.fixtures as f
import data.emr.request
import data.emr.response

student_read(t) := f.with_time(f.read("stu-001", "TRAIN", "Patient", ["Patient/p1"]), t)

# II.1: a rotation is in force from its start (inclusive) to its end (exclusive), to the second.
test_rotation_window if {
	every t in ["2026-12-01T00:00:00Z", "2026-12-15T12:00:00.500Z", "2026-12-31T23:59:58Z", "2026-12-31T23:59:58.999Z"] {
		d := request.decision with input as student_read(t)
		d.allow
	}
	every t in ["2026-11-30T23:59:59Z", "2026-11-30T23:59:59.999Z", "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z"] {
		d := request.decision with input as student_read(t)
		f.rules(d) == {"grant.no-rotation"}
	}
}

# The next second after the rotation ends is refused, whatever the patient.
test_student_without_rotation_refused_entirely if {
	d := request.decision with input as f.read("stu-002", "TRAIN", "Patient", ["Patient/p1"])
	not d.allow
	f.rules(d) == {"grant.no-rotation"}
	f.well_formed(d)
	some r in d.reasons
	r.clause == "II.1"
	d2 := request.decision with input as f.req("stu-002", "TRAIN", "search-type", "Observation", [])
	f.rules(d2) == {"grant.no-rotation"}
}

test_rotation_must_be_the_operators_and_for_training if {
	other := object.union(f.rotation, {"operator": "stu-999"})
	d := request.decision with input as f.with_subject(f.read("stu-001", "TRAIN", "Patient", ["Patient/p1"]), object.union(f.subjects["stu-001"], {"grants": [other]}))
	f.rules(d) == {"grant.no-rotation"}
	wrong := object.union(f.rotation, {"purposes": ["TREAT"]})
	d2 := request.decision with input as f.with_subject(f.read("stu-001", "TRAIN", "Patient", ["Patient/p1"]), object.union(f.subjects["stu-001"], {"grants": [wrong]}))
	f.rules(d2) == {"grant.no-rotation"}
	unnamed := object.remove(f.rotation, ["operator"])
	d3 := request.decision with input as f.with_subject(f.read("stu-001", "TRAIN", "Patient", ["Patient/p1"]), object.union(f.subjects["stu-001"], {"grants": [unnamed]}))
	d3.allow
}

# Without the gateway's clock no grant is in force.
test_no_time_no_grant if {
	d := request.decision with input as object.remove(f.read("stu-001", "TRAIN", "Patient", ["Patient/p1"]), ["time"])
	f.rules(d) == {"grant.no-rotation"}
}

# Residents need a rotation for TRAIN only.
test_resident_rotation if {
	d := request.decision with input as f.read("res-1", "TRAIN", "Patient", ["Patient/p1"])
	f.rules(d) == {"grant.no-rotation"}
	d2 := request.decision with input as f.read("res-1", "TREAT", "Patient", ["Patient/p1"])
	d2.allow
	rot := object.union(f.rotation, {"operator": "res-1"})
	d3 := request.decision with input as f.with_subject(f.read("res-1", "TRAIN", "Patient", ["Patient/p1"]), object.union(f.subjects["res-1"], {"grants": [rot]}))
	d3.allow
}

# A role without its grant does not count; another role may still act.
test_other_role_still_counts if {
	s := {"id": "dr-x", "roles": ["student", "physician"], "dept": "cardiology", "grants": []}
	d := request.decision with input as f.with_subject(f.read("dr-li", "TRAIN", "Patient", ["Patient/p1"]), s)
	d.allow
	data.emr.roles.active == {"physician"} with input as f.with_subject(f.read("dr-li", "TRAIN", "Patient", []), s)
}

# II.1: vendors act only under an agreement in force.
test_vendor_needs_agreement if {
	d := request.decision with input as f.read("ven-1", "HOPERAT", "Device", [])
	d.allow
	s := object.union(f.subjects["ven-1"], {"grants": []})
	d2 := request.decision with input as f.with_subject(f.read("ven-1", "HOPERAT", "Device", []), s)
	f.rules(d2) == {"grant.no-agreement"}
	d3 := request.decision with input as f.with_time(f.read("ven-1", "HOPERAT", "Device", []), "2027-11-01T00:00:00Z")
	f.rules(d3) == {"grant.no-agreement"}
	f.well_formed(d3)
}

test_scope_helpers if {
	inp := f.read("ven-1", "HOPERAT", "Device", [])
	data.emr.grants.in_scope("vendor", "read", "Device") with input as inp
	not data.emr.grants.in_scope("vendor", "update", "Device") with input as inp
	not data.emr.grants.in_scope("vendor", "read", "Patient") with input as inp
	data.emr.grants.covers_type("vendor", "Encounter") with input as inp
	not data.emr.grants.covers_type("vendor", "Patient") with input as inp
	data.emr.grants.fields("vendor", "Device") == {"id", "status", "manufacturer"} with input as inp
	data.emr.grants.fields("vendor", "Encounter") == set() with input as inp
}

test_export_covers if {
	inp := f.read("rec-chen", "HOPERAT", "Patient", [])
	data.emr.grants.export_covers({"Patient", "Observation"}) with input as inp
	not data.emr.grants.export_covers({"Patient", "Condition"}) with input as inp
	not data.emr.grants.export_covers(set()) with input as inp
	not data.emr.grants.export_covers({"Patient"}) with input as f.with_time(inp, "2026-12-02T00:00:00Z")
}

# The refusal names no time the requester did not send: it is in detail.
test_grant_reasons_detail if {
	d := request.decision with input as f.read("stu-002", "TRAIN", "Patient", ["Patient/p1"])
	[r] := d.reasons
	r.detail == {"time": f.now}
	not contains(concat(" ", [r.en, r.zh]), "2026")
	v := object.union(f.subjects["ven-1"], {"grants": []})
	d2 := request.decision with input as f.with_subject(f.read("ven-1", "HOPERAT", "Device", []), v)
	[r2] := d2.reasons
	r2.detail == {"time": f.now}
}

# --- valid_until: the earliest boundary ahead at which a grant's window changes the answer --------

# In force: until its end (whole seconds, rounded down); before its start: until the start.
test_valid_until_next_boundary if {
	d := request.decision with input as student_read("2026-12-15T12:00:00.500Z")
	d.allow
	d.valid_until == "2026-12-31T23:59:59Z"
	later := object.union(f.rotation, {"start": "2026-12-20T06:30:00.750Z"})
	s := object.union(f.subjects["stu-001"], {"grants": [later, f.rotation]})
	d2 := request.decision with input as f.with_subject(student_read("2026-12-15T12:00:00Z"), s)
	d2.allow
	d2.valid_until == "2026-12-20T06:30:00Z"
	r := response.decision with input as object.union(f.with_subject(student_read("2026-12-15T12:00:00Z"), s), {"entries": []})
	r.valid_until == "2026-12-20T06:30:00Z"
}

# Only the operator's grants for the purpose claimed count; ended ones never come back.
test_valid_until_only_grants_read if {
	other := object.union(f.rotation, {"purposes": ["TREAT"], "start": "2026-12-20T00:00:00Z"})
	ended := object.union(f.rotation, {"start": "2026-11-01T00:00:00Z", "end": "2026-12-10T00:00:00Z"})
	s := object.union(f.subjects["stu-001"], {"grants": [other, ended, f.rotation]})
	d := request.decision with input as f.with_subject(student_read("2026-12-15T12:00:00Z"), s)
	d.valid_until == "2026-12-31T23:59:59Z"
	d2 := request.decision with input as f.read("dr-li", "TREAT", "Patient", ["Patient/p1"])
	d2.valid_until == null
}

# A grant refusal quotes input.time: it holds for that instant only (not after it).
test_valid_until_refusal_this_instant if {
	d := request.decision with input as student_read("2027-01-01T00:00:00.250Z")
	f.rules(d) == {"grant.no-rotation"}
	d.valid_until == "2027-01-01T00:00:00Z"
	d2 := request.decision with input as object.remove(f.read("stu-001", "TRAIN", "Patient", ["Patient/p1"]), ["time"])
	d2.valid_until == null
}
