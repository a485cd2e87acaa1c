# I.4 "按照岗位职责": clinical staff see the records of the patients they care for: patients of their
# own department or whose care team names them. Trainees acting for TRAIN see only patients of the
# department of their active rotation (II.1: not beyond the training's scope). Roles not bound to a
# care relationship (pharmacists, researchers, records officers, vendors: data) are limited by
# emr.roles, emr.grants and emr.fields instead. A patient without context in input.patients is
# unrelated for everyone (fail closed: its seal state is unknown too).
#
# Break-the-glass: ETREAT or BTG with a reason (header X-Break-Glass-Reason) lets physicians,
# nurses and residents reach patients outside the care relationship; every such decision raises a
# high-severity alert (II.3). It never opens a sealed record (emr.seal).
# Data: emr/config/care/data.json (data.emr.config.care).

# METADATA
# title: Care relationship and break-the-glass
# description: >-
#   Clinical staff reach only the patients of their department or care team, trainees only those of
#   their rotation's department. ETREAT or BTG with a reason reaches the patients the request names,
#   and every such access raises a high-severity alert.
# custom:
#   clauses: [I.4, II.1, II.3]
package emr.care

import rego.v1

cfg := data.emr.config.care

bound contains r if {
	some r in data.emr.roles.active
	r in cfg.care_bound_roles
}

rotation_bound contains r if {
	some r in bound
	data.emr.grants.required_kind[r] == data.emr.grants.kinds.rotation
}

break_glass_reason := trim_space(r) if {
	r := object.get(data.emr.lib.as_object(object.get(input, "break_glass", {})), "reason", "")
	is_string(r)
} else := ""

break_glass_possible if {
	data.emr.lib.purpose in cfg.break_glass.purposes
	some r in data.emr.roles.active
	r in cfg.break_glass.roles
}

waiver contains r if {
	break_glass_reason != ""
	data.emr.lib.purpose in cfg.break_glass.purposes
	some r in data.emr.roles.active
	r in cfg.break_glass.roles
}

# Once per query, over the patients' context: who is related by department, by care team, by the
# department of an active rotation (each computed only if a role needs it).
dept_patients := {p |
	dept := data.emr.lib.subject_dept
	dept != ""
	some p, ctx in data.emr.lib.patients
	dept in ctx.departments
}

team_patients := {p |
	sid := data.emr.lib.subject_id
	sid != ""
	some p, ctx in data.emr.lib.patients
	sid in ctx.care_team
}

rotation_patients := {p |
	depts := data.emr.grants.rotation_depts
	some p, ctx in data.emr.lib.patients
	is_array(ctx.departments)
	some d in ctx.departments
	d in depts
}

known_patients := {p | some p, _ in data.emr.lib.patients}

# Per active role: the patients (of input.patients) it reaches without breaking the glass.
normal_reach[r] := normal_reach_of(r) if some r in data.emr.roles.active

normal_reach_of(r) := known_patients if not r in bound

else := rotation_patients if r in rotation_bound

else := dept_patients | team_patients

# ... and with it. Break-the-glass reaches the patients the request names, never more: a search
# across patients (Patient?name=) under ETREAT still returns only related patients (security review:
# an emergency reason must not open the whole hospital).
reach[r] := ps if {
	some r in data.emr.roles.active
	ps := reach_of(r)
}

reach_of(r) := normal_reach_of(r) | (data.emr.lib.request_patients & known_patients) if r in waiver

else := normal_reach_of(r)

reach_any := {p | some _, ps in reach; some p in ps}

normal_any := {p | some _, ps in normal_reach; some p in ps}

# Reached only by breaking the glass.
waiver_only := reach_any - normal_any

hint := {
	"en": sprintf("in an emergency, keep purpose %s and give the reason in header %s", [data.emr.lib.purpose, cfg.break_glass.header]),
	"zh": sprintf("如属紧急情况,请保持使用目的 %s 并在请求头 %s 中说明理由", [data.emr.lib.purpose, cfg.break_glass.header]),
} if {
	break_glass_possible
	break_glass_reason == ""
}

else := {
	"en": "they are not in the department of your active rotation",
	"zh": "患者不在您当前轮转科室",
} if {
	count(rotation_bound) > 0
	count(bound) == count(data.emr.roles.active)
}

else := {
	"en": sprintf("they are not in your department '%s' nor is '%s' on their care team: ask to be added to the care team, or in an emergency use purpose ETREAT/BTG with header %s", [data.emr.lib.subject_dept, data.emr.lib.subject_id, cfg.break_glass.header]),
	"zh": sprintf("患者不在您的科室“%s”,您(%s)也不在其诊疗组:请申请加入诊疗组;紧急情况请使用 ETREAT/BTG 目的并提供请求头 %s", [data.emr.lib.subject_dept, data.emr.lib.subject_id, cfg.break_glass.header]),
}

unrelated(ps) := {p | some p in ps; not p in reach_any}

no_context(ps) := {p | some p in ps; not p in known_patients}

context_note(missing) := {"en": "", "zh": ""} if count(missing) == 0

else := {
	"en": " (the gateway supplied no context for a patient of it: departments, care team, seal)",
	"zh": "(网关未提供其中患者的信息:科室、诊疗组、封存状态)",
}

# Who the refusal is about, for the audit record only (a reason's text never names another patient,
# nor the departments of a rotation: the requester did not send them).
detail(ps, missing) := {"patients": sort(ps), "no_context": sort(missing), "rotation_departments": sort(data.emr.grants.rotation_depts)}

# I.4: every patient a request targets must be related to the operator.
deny contains r if {
	count(data.emr.roles.active) > 0
	some t in data.emr.lib.targets
	ps := unrelated(t.patients)
	count(ps) > 0
	missing := no_context(ps)
	r := data.emr.lib.reason_with_detail(
		"care.no-relationship", "I.4",
		sprintf("%sno care relationship with the patient(s) of this request: %s%s", [t.where, hint.en, context_note(missing).en]),
		sprintf("%s与本请求涉及的患者无诊疗关系:%s%s", [t.where, hint.zh, context_note(missing).zh]),
		detail(ps, missing),
	)
}

# II.3: breaking the glass is always alerted, with the patients reached that way.
alert(ps) := data.emr.lib.alert(
	"break-glass", "high", ps,
	sprintf("break-the-glass access (%s) by %s for purpose %s: %s", [break_glass_reason, data.emr.lib.subject_id, data.emr.lib.purpose, data.emr.lib.joined(ps)]),
	sprintf("%s 以 %s 为目的紧急破窗访问(理由:%s):%s", [data.emr.lib.subject_id, data.emr.lib.purpose, break_glass_reason, data.emr.lib.joined(ps)]),
)

# Sealed patients are refused (emr.seal), not reached: they are not in this alert.
request_break_glass := {p |
	count(waiver) > 0
	some p in data.emr.lib.request_patients
	p in waiver_only
	not p in data.emr.seal.denied
}

request_obligations := alerts(request_break_glass) if count(waiver) > 0

else := []

alerts(ps) := [alert(ps)] if count(ps) > 0

else := []
