# The response decision: one verdict per resource that comes back (search entries, includes,
# contained resources, $everything, batch/transaction responses), in the order of input.entries,
# plus the alerts the response raises. Asked once per response, never once per resource: what
# depends only on the operator, the purpose, the resource type or the patient is computed once per
# query (rules); per entry there are only lookups. Contract: opa_policies/README.md.
# entry.patients is authoritative (entry.patient is its first element).

# METADATA
# title: The response decision
# description: >-
#   data.emr.response.decision: one verdict per returned resource (kept or withheld, grade,
#   redactions, transforms, reasons), plus the alerts for break-the-glass and sealed records. Worked
#   out per query, type and patient list; per entry there are only lookups.
# custom:
#   clauses: [I.4, II.1, II.3]
package emr.response

import rego.v1

# An entry that is not an object, or lacks type, patients, codes, security or tags (arrays), gets
# no verdict: the gateway, seeing one verdict too few, refuses (fail closed).
entries := input.entries

# Per resource type, once: its base grade, the active roles that may see it, what is removed from it
# and how it is changed, and why it would be withheld whatever the entry holds.
type_info[t] := info if {
	some t in entry_types
	visible_to := [r | some r in data.emr.roles.active; data.emr.roles.reads_type(r, t)]
	field_reasons := fields_reasons(t)
	info := {
		"base": data.emr.grading.base(t),
		"visible_to": visible_to,
		"roles": roles_if_fields(visible_to, field_reasons),
		"none_ok": none_ok(t),
		"redact": data.emr.fields.redact(t),
		"transform": data.emr.fields.transform(t),
		"type_reasons": type_reasons(t, visible_to),
		"field_reasons": field_reasons,
	}
}

entry_types := {t | some e in entries; t := e.type; is_string(t)}

roles_if_fields(visible_to, field_reasons) := visible_to if count(field_reasons) == 0

else := []

# What the roles that may see an entry (ok, above) are compared with: no role ([]) withholds it;
# the capability statement (no purpose needed to ask for it) is not patient data and is kept
# whatever the roles (null: ok, an array, is never null).
none_ok(t) := null if {
	data.emr.lib.exempt
	t in data.emr.lib.cfg.exempt_response_types
} else := []

cap := data.emr.roles.cap

reach := data.emr.care.reach

denied := data.emr.seal.denied

pseudonymise := data.emr.fields.pseudonymise

# Entries of a response repeat the same codings and the same patients: each distinct coding, label
# and tag is graded once (emr.grading, direct lookups), each distinct patient list is checked once;
# per entry there are only lookups. The gateway sends every coding, label and tag as {system,
# code}, system "" when it has none. (x := f[_] iterates a collection and yields nothing for
# anything else, with no builtin call: regorus fails the whole evaluation on `some x in "text"`.)
codings := {c | some e in entries; c := e.codes[_]}

labels := {l | some e in entries; l := e.security[_]} | {l | some e in entries; l := e.tags[_]}

# Each distinct system of the response put in canonical form once, then each distinct coding, and
# label or tag, graded once (one call each for the whole response). Most codings are of systems
# not listed (categories, statuses, units, medications): they cost one lookup.
system_aliases := data.emr.grading.system_names({x.system | some x in (codings | labels)})

coding_grade := data.emr.grading.coding_grades(codings, system_aliases)

label_grade := data.emr.grading.label_grades(labels, system_aliases)

# Per distinct patient list: the grade the patients' flags impose (VIP, staff), and the active
# roles that reach every patient in it, none sealed to the operator (emr.care, emr.seal).
patient_lists[ps] := facts if {
	some ps in patient_list_keys
	facts := {
		"grade": max(array.concat([0], [g | some p in ps; g := flag_grade[p]])),
		"roles": {r | some r, reached in open_reach; every p in ps { p in reached }},
	}
}

patient_list_keys := {e.patients | some e in entries; is_array(e.patients)}

flag_grade := data.emr.grading.flag_grade

# Per active role: the patients it reaches whose records are not sealed to the operator.
open_reach[r] := ps if {
	some r, reached in reach
	ps := reached - denied
}

# Per entry, only lookups (a function call per entry would cost more than they do): the grade is
# the highest of type, content and patient flags (emr.grading); the entry is kept iff one active
# role may see the type at that grade and reaches all its patients (emr.roles, emr.care, emr.seal,
# emr.fields). Why an entry is withheld is worked out only for the entries withheld.
verdicts := vs if {
	# Rules bound to local names once: a lookup through a rule inside the loop costs more in regorus.
	types := type_info
	graded := [coding_grade, label_grade, label_grade] # by field: codes, security, tags
	lists := patient_lists
	caps := cap
	pseudo := pseudonymise
	vs := [v |
		some e in entries
		info := types[e.type]
		pl := lists[e.patients]
		g := max(array.concat([info.base, pl.grade], [x | y := [e.codes, e.security, e.tags][i][_]; x := graded[i][y]]))
		ok := [r | some r in info.roles; r in pl.roles; g <= caps[r]]
		keep := ok != info.none_ok
		v := {
			"keep": keep,
			"grade": g,
			"redact": info.redact,
			"transform": info.transform,
			"pseudonymise": pseudo,
			"reasons": reasons(keep, info, g, e.patients),
		}
	]
}

decision := {"verdicts": verdicts, "obligations": obligations, "valid_until": data.emr.grants.valid_until}

# --- why an entry is withheld (only for withheld entries) -----------------------------------------

# One function with an else (regorus evaluates every clause of a multi-clause function).
reasons(keep, info, g, ps) := [] if keep

else := rs if {
	lr := list_reasons[ps]
	rs := array.concat(array.concat(lr.seal, access_reasons(info, g, ps, lr.care)), info.field_reasons)
} else := array.concat(access_reasons(info, g, ps, []), info.field_reasons)

# Seal aside: does some role allow it? If not, which part fails (type, grade, patient)? If each
# part is allowed by some role but no single role allows all, say so.
access_reasons(info, g, ps, care) := [] if {
	some r in info.visible_to
	g <= cap[r]
	every p in ps {
		p in reach[r]
	}
} else := rs if {
	rs := array.concat(array.concat(info.type_reasons, grade_reasons(g)), care)
	count(rs) > 0
} else := [combination_reason]

# I.4 minimum necessary: a type no active role may see is withheld wherever it appears.
type_reasons(t, visible_to) := [data.emr.lib.reason(
	"type.not-visible", "I.4",
	sprintf("%s withheld: the operator's roles may not see this resource type for purpose %s", [t, data.emr.lib.purpose]),
	sprintf("已隐去 %s:操作人员的角色无权以 %s 为目的查看该类资源", [t, data.emr.lib.purpose]),
)] if count(visible_to) == 0

else := []

# I.4 graded access: above the highest grade the active roles may see for the purpose.
grade_reasons(g) := [grade_reason[g]] if g > data.emr.roles.max_cap

else := []

# The record's grade goes in detail, not in the text: "grade 5" would say what kind of record it
# is (HIV, substance use, genetic ...) to someone who may not see it.
grade_reason[g] := r if {
	some g in numbers.range(1, 5)
	g > data.emr.roles.max_cap
	r := data.emr.lib.reason_with_detail(
		"grade.exceeded", "I.4",
		sprintf("withheld: the record is above grade %d (sensitive codes, security labels or patient flags), the highest your roles may see for purpose %s", [data.emr.roles.max_cap, data.emr.lib.purpose]),
		sprintf("已隐去:该记录超出您的角色以 %s 为目的可查看的最高级别 %d 级(敏感编码、安全标签或患者标记)", [data.emr.lib.purpose, data.emr.roles.max_cap]),
		{"grade": g},
	)
}

# The patients of the response that withhold every record of theirs, once per query: sealed to the
# operator (emr.seal), unrelated or without context (emr.care).
unrelated_here := {p | some p in response_patients; data.emr.lib.patients[p]; not p in data.emr.care.reach_any}

missing_here := {p | some p in response_patients; not data.emr.lib.patients[p]}

withholding := ((denied & response_patients) | unrelated_here) | missing_here

# Per distinct patient list holding such a patient, once (only when an entry is withheld): why its
# patients withhold it, one reason per concern. The texts name no patient (the requester may not
# have named them: a read by id, an _include, a batch entry): the patients are in detail.
list_reasons[ps] := facts if {
	bad := withholding
	count(bad) > 0
	some ps in patient_list_keys
	here := {p | some p in ps; p in bad}
	count(here) > 0
	facts := {
		"seal": seal_reasons(here & denied),
		"care": array.concat(care_reasons(here & unrelated_here), context_reasons(here & missing_here)),
	}
}

seal_reasons(ps) := [data.emr.seal.reason("withheld: ", "已隐去:", ps)] if count(ps) > 0

else := []

# I.4: records of patients the operator has no care relationship with are withheld (this is how a
# clinician's Patient?name= search returns only related patients).
care_reasons(ps) := [data.emr.lib.reason_with_detail(
	"care.no-relationship", "I.4",
	sprintf("withheld: no care relationship with the patient(s) of this record: %s", [data.emr.care.hint.en]),
	sprintf("已隐去:与该记录涉及的患者无诊疗关系:%s", [data.emr.care.hint.zh]),
	data.emr.care.detail(ps, set()),
)] if count(ps) > 0

else := []

context_reasons(ps) := [data.emr.lib.reason_with_detail(
	"care.no-relationship", "I.4",
	"withheld: the gateway supplied no context for a patient of this record (departments, care team, seal): refused",
	"已隐去:网关未提供该记录所涉患者的信息(科室、诊疗组、封存状态),不予提供",
	data.emr.care.detail(set(), ps),
)] if count(ps) > 0

else := []

combination_reason := data.emr.lib.reason(
	"role.combination", "I.4",
	"withheld: no single role of yours permits it (permissions of different roles are not combined)",
	"已隐去:您的任一角色均不能单独查看该记录(不同角色的权限不叠加)",
)

response_patients := {p | some e in entries; is_array(e.patients); some p in e.patients}

# II.1: a vendor whose agreement names no elements of the type gets none of it.
fields_reasons(t) := [data.emr.fields.no_fields_reason(t)] if data.emr.fields.no_fields(t)

else := []

# --- alerts (II.3), computed only when some patient of the input is concerned -------------------

break_glass_patients := {p |
	count(data.emr.care.waiver) > 0
	some i, v in verdicts
	v.keep
	some p in entries[i].patients
	p in data.emr.care.waiver_only
}

sealed_denied := {p |
	count(denied) > 0
	some p in response_patients
	p in denied
}

sealed_allowed := {p |
	count(data.emr.seal.allowed) > 0
	some i, v in verdicts
	v.keep
	some p in entries[i].patients
	p in data.emr.seal.allowed
}

obligations := array.concat(
	array.concat(data.emr.care.alerts(break_glass_patients), data.emr.seal.denied_alerts(sealed_denied)),
	data.emr.seal.allowed_alerts(sealed_allowed),
)
