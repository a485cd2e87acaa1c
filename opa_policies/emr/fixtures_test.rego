# Test fixtures shared by the *_test.rego files (never loaded by the gateway: *_test.rego files are
# excluded from the policy modules). Times are RFC 3339 UTC; the rotation runs through December 2026.
package emr.fixtures

import rego.v1

now := "2026-12-01T08:00:00.000Z"

icd := "http://hl7.org/fhir/sid/icd-10"

conf := "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

actcode := "http://terminology.hl7.org/CodeSystem/v3-ActCode"

ctx(depts, team) := {"departments": depts, "care_team": team, "flags": [], "sealed": false, "seal": null}

seal := {"id": "s1", "authorised": ["rec-chen", "dr-li"], "case": "舆情-2026-031", "reason": "media event", "sealed_at": "2026-11-30T00:00:00Z"}

# p1: cardiology, care team dr-li and nurse-zhao; p2: oncology; vip: cardiology, VIP; sealed:
# cardiology, sealed for everyone but rec-chen and dr-li; staff: oncology, a member of staff.
patients := {
	"Patient/p1": ctx(["cardiology"], ["dr-li", "nurse-zhao"]),
	"Patient/p2": ctx(["oncology"], []),
	"Patient/p3": ctx(["oncology"], ["dr-li"]),
	"Patient/vip": object.union(ctx(["cardiology"], []), {"flags": ["VIP"]}),
	"Patient/staff": object.union(ctx(["oncology"], []), {"flags": ["staff"]}),
	"Patient/sealed": object.union(ctx(["cardiology"], []), {"sealed": true, "seal": seal}),
}

rotation := {
	"id": "g-rot", "kind": "rotation", "operator": "stu-001", "dept": "cardiology", "purposes": ["TRAIN"],
	"start": "2026-12-01T00:00:00Z", "end": "2026-12-31T23:59:59Z",
	"agreement": null, "supervisor": "dr-li",
}

vendor_grant := {
	"id": "g-ven", "kind": "vendor", "operator": "ven-1", "purposes": ["HOPERAT"],
	"start": "2026-11-01T00:00:00Z", "end": "2027-11-01T00:00:00Z",
	"scope": {
		"types": ["Device", "Encounter"],
		"fields": {"Device": ["id", "status", "manufacturer"]},
		"interactions": ["read", "search-type"],
	},
	"agreement": "VA-2026-07", "supervisor": "sec-wang",
}

export_grant := {
	"id": "g-exp", "kind": "export", "operator": "rec-chen", "purposes": ["HOPERAT"],
	"start": "2026-11-01T00:00:00Z", "end": "2026-12-02T00:00:00Z",
	"scope": {"types": ["Patient", "Observation"]},
}

# The operators of the tests, by id.
subjects := {
	"dr-li": {"id": "dr-li", "roles": ["physician"], "dept": "cardiology", "grants": []},
	"dr-wu": {"id": "dr-wu", "roles": ["physician"], "dept": "neurology", "grants": []},
	"nurse-zhao": {"id": "nurse-zhao", "roles": ["nurse"], "dept": "cardiology", "grants": []},
	"ph-1": {"id": "ph-1", "roles": ["pharmacist"], "dept": "pharmacy", "grants": []},
	"res-1": {"id": "res-1", "roles": ["resident"], "dept": "cardiology", "grants": []},
	"stu-001": {"id": "stu-001", "roles": ["student"], "dept": "medicine", "grants": [rotation]},
	"stu-002": {"id": "stu-002", "roles": ["student"], "dept": "medicine", "grants": []},
	"sci-1": {"id": "sci-1", "roles": ["researcher"], "dept": "research", "grants": []},
	"rec-chen": {"id": "rec-chen", "roles": ["records_officer"], "dept": "records", "grants": [export_grant]},
	"ven-1": {"id": "ven-1", "roles": ["vendor"], "dept": "", "grants": [vendor_grant]},
	"sec-wang": {"id": "sec-wang", "roles": ["security_officer"], "dept": "it", "grants": []},
	"x": {"id": "x", "roles": ["janitor"], "dept": "", "grants": []},
}

# A request input: who, for which purpose, which interaction on which type and patients.
req(who, purpose, interaction, type, pts) := {
	"subject": subjects[who],
	"purpose": purpose,
	"break_glass": null,
	"time": now,
	"request_id": "t-1",
	"action": {"interaction": interaction, "method": "GET", "level": "type", "operation": null, "conditional": false},
	"target": {
		"type": type, "id": null, "compartment": null, "patients": pts,
		"params": {}, "if_none_exist": {}, "entries": [],
	},
	"patients": patients,
}

read(who, purpose, type, pts) := req(who, purpose, "read", type, pts)

op(who, purpose, operation, type, pts) := object.union(req(who, purpose, "operation", type, pts), {"action": {"interaction": "operation", "operation": operation}})

with_params(inp, params) := object.union(object.remove(inp, ["target"]), {"target": object.union(object.remove(inp.target, ["params"]), {"params": params})})

with_time(inp, t) := object.union(inp, {"time": t})

with_break_glass(inp, reason) := object.union(inp, {"break_glass": {"reason": reason}})

with_subject(inp, subject) := object.union(inp, {"subject": subject})

batch(who, purpose, kind, entries) := object.union(req(who, purpose, kind, null, []), {"target": {"entries": entries}})

bentry(interaction, type, pts) := {
	"interaction": interaction, "conditional": false, "method": "GET", "type": type, "id": null,
	"operation": null, "patients": pts, "params": {},
}

# A response entry (the gateway's summary of one resource).
entry(type, pts) := {
	"type": type, "id": "x", "patient": first(pts), "patients": pts,
	"security": [], "tags": [], "codes": [],
	"kind": "entry", "path": "entry[0].resource", "search_mode": "match", "bundle_type": "searchset",
}

first(pts) := pts[0] if count(pts) > 0

else := null

coded(type, pts, system, code) := object.union(entry(type, pts), {"codes": [{"system": system, "code": code}]})

labelled(type, pts, system, code) := object.union(entry(type, pts), {"security": [{"system": system, "code": code}]})

resp(who, purpose, entries) := object.union(req(who, purpose, "search-type", "Observation", []), {"entries": entries})

rules(d) := {r.rule | some r in d.reasons}

events(d) := {o.event | some o in d.obligations}

kept(d) := [v.keep | some v in d.verdicts]

# Every reason carries both languages and a clause id of the notice.
well_formed(d) if {
	every r in d.reasons {
		r.clause in {"I.1", "I.2", "I.3", "I.4", "II.1", "II.2", "II.3", "III"}
		count(r.en) > 10
		count(r.zh) > 4
	}
}
