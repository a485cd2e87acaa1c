# II.1 规范使用权限和行为: trainees' permissions may not exceed the scope and duration of their
# rotation; external vendors act only within the scope, purpose and term of their agreement; I.4
# time-limited permissions. Grants come with the input (subject.grants, revoked ones removed by the
# gateway); whether each is in force is decided here, against input.time, never the clock.
# Data: emr/config/grants/data.json (data.emr.config.grants).

# METADATA
# title: Time-limited grants
# description: >-
#   Whether each rotation, vendor agreement and export grant is in force at input.time, and what it
#   covers. Trainees without a rotation and vendors without an agreement in force are refused.
# custom:
#   clauses: [I.4, II.1]
package emr.grants

import rego.v1

cfg := data.emr.config.grants

kinds := cfg.kinds

now := time.parse_rfc3339_ns(t) if {
	t := object.get(input, "time", null)
	is_string(t)
	t != ""
}

# The operator's grants for the purpose claimed, with both ends given: the windows read below.
# (The purpose is checked first: parsing a timestamp is the costly part.)
candidates contains g if {
	some g in data.emr.lib.subject_grants
	data.emr.lib.purpose in data.emr.lib.as_array(object.get(g, "purposes", []))
	object.get(g, "operator", data.emr.lib.subject_id) == data.emr.lib.subject_id
	is_string(g.start)
	is_string(g.end)
}

# Grants for the purpose claimed, in force at input.time to the second: start inclusive, end
# exclusive.
for_purpose contains g if {
	some g in candidates
	time.parse_rfc3339_ns(g.start) <= now
	now < time.parse_rfc3339_ns(g.end)
}

# --- until when a decision holds (the gateway's decision cache honours it, gateway/policy/cache.py)

# The instants after input.time at which a grant read above enters or leaves its window (the same
# timestamps for_purpose parses, no others). Until the first of them, every rule here answers alike.
ahead contains ns if {
	some g in candidates
	ns := time.parse_rfc3339_ns(g.start)
	ns > now
}

ahead contains ns if {
	some g in candidates
	time.parse_rfc3339_ns(g.start) <= now
	ns := time.parse_rfc3339_ns(g.end)
	ns > now
}

# RFC 3339, UTC, whole seconds rounded down (both engines format it alike; earlier is never wrong).
# A refusal here quotes input.time in its detail: it holds for that instant only. null: no boundary
# ahead, the answer is the same at every later time. Every package that reads input.time has a
# valid_until that the decisions carry (tests/gateway/policy/test_cache.py holds this).
valid_until := time.format([now, "UTC", "2006-01-02T15:04:05Z07:00"]) if {
	count(deny) > 0
} else := time.format([min(ahead), "UTC", "2006-01-02T15:04:05Z07:00"]) if {
	count(ahead) > 0
} else := null

# The grant kind a role needs for the purpose (student/resident TRAIN: rotation; vendor: vendor).
required_kind[r] := k if {
	some r in data.emr.lib.subject_roles
	k := cfg.required[r][data.emr.lib.purpose]
}

has_kind(k) if {
	some g in for_purpose
	g.kind == k
}

# Roles whose grant requirement (if any) is met.
met contains r if {
	some r in data.emr.lib.subject_roles
	not required_kind[r]
}

met contains r if {
	some r, k in required_kind
	has_kind(k)
}

# Departments of the active rotations for the purpose (I.4 / II.1: training scope).
rotation_depts := {d | some g in for_purpose; g.kind == kinds.rotation; d := g.dept; is_string(d)}

scope(g) := data.emr.lib.as_object(object.get(g, "scope", {}))

# [kind, interaction, type] triples, each from one grant: the grant must name the interaction AND
# the type. "absent/empty = none".
scope_triples contains triple if {
	some g in for_purpose
	some i in data.emr.lib.as_array(object.get(scope(g), "interactions", []))
	some t in data.emr.lib.as_array(object.get(scope(g), "types", []))
	triple := [g.kind, i, t]
}

# Binary (content opaque to the filter) only when named, also in grants.
in_scope(k, i, t) if [k, i, t] in scope_triples

in_scope(k, i, t) if {
	[k, i, "*"] in scope_triples
	not t in data.emr.config.roles.explicit_only_types
}

scoped_types contains [k, t] if {
	some [k, _, t] in scope_triples
}

# For responses: the type is covered by some grant of the kind (the interaction was checked on the request).
covers_type(k, t) if [k, t] in scoped_types

covers_type(k, t) if {
	[k, "*"] in scoped_types
	not t in data.emr.config.roles.explicit_only_types
}

# Vendor field scope per type: the top-level elements it may see, from grants that cover the type.
fields(k, t) := {f |
	some g in for_purpose
	g.kind == k
	some f in data.emr.lib.as_array(object.get(data.emr.lib.as_object(object.get(scope(g), "fields", {})), t, []))
}

# $export: an active export grant for the purpose covering every type asked for in _type.
export_covers(types) if {
	count(types) > 0
	some g in for_purpose
	g.kind == kinds.export
	covered := data.emr.lib.as_array(object.get(scope(g), "types", []))
	every t in types {
		t in covered
	}
}

# The ids of the grants of a kind in force for the purpose (in a reason's detail, never its text).
grant_ids(k) := sort({id | some g in for_purpose; g.kind == k; id := data.emr.lib.as_string(object.get(g, "id", "?"))})

# Roles the policy knows that may claim the purpose, and those of them whose grant is in force.
eligible := {r | some r in data.emr.purpose.claimants; data.emr.config.roles.roles[r]}

missing_kinds := {k | some r in eligible; not r in met; k := required_kind[r]}

# II.1: trainees use records only within an active rotation; refused entirely without one.
deny contains r if {
	count(eligible & met) == 0
	kinds.rotation in missing_kinds
	r := data.emr.lib.reason_with_detail(
		"grant.no-rotation", "II.1",
		sprintf("no rotation grant for purpose %s is in force now (the rotation has not begun or has ended): ask the teaching office for a rotation grant", [data.emr.lib.purpose]),
		sprintf("当前没有有效的 %s 轮转授权(轮转尚未开始或已结束):请向科教部门申请轮转授权", [data.emr.lib.purpose]),
		{"time": object.get(input, "time", "")},
	)
}

# II.1: vendors act only under a signed agreement in force, for its purposes.
deny contains r if {
	count(eligible & met) == 0
	kinds.vendor in missing_kinds
	r := data.emr.lib.reason_with_detail(
		"grant.no-agreement", "II.1",
		sprintf("no vendor agreement grant for purpose %s is in force now: the hospital must register (or renew) the agreement", [data.emr.lib.purpose]),
		sprintf("当前没有有效的、目的为 %s 的外部服务商授权协议:请医院登记或续签协议", [data.emr.lib.purpose]),
		{"time": object.get(input, "time", "")},
	)
}
