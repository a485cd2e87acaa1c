# I.4 落实分级管理 (least privilege): per role, the highest grade it may see for each purpose, the
# resource types it may read and the operations it may call. II.1: permissions are bound to the
# roles of a personal account. Writes: emr.write. Data: emr/config/roles/data.json.
#
# Several roles: a role takes part only if it may claim the purpose (and its grant is in force); a
# use is allowed when ONE active role allows all of it (type, grade, patient): the most permissive
# role decides, and no use is pieced together from two roles (type from one, patient from the other).

# METADATA
# title: Role-based least privilege
# description: >-
#   Per active role (one that may claim the purpose, its grant in force): the highest grade it may
#   see, the types it may read and the operations it may call. Refuses unknown roles, purposes no
#   role may claim, types no role may see, interactions not granted and grades above the cap.
# custom:
#   clauses: [I.4, II.1]
package emr.roles

import rego.v1

cfg := data.emr.config.roles

known contains r if {
	some r in data.emr.lib.subject_roles
	cfg.roles[r]
}

active := (data.emr.purpose.claimants & known) & data.emr.grants.met

# I.4: the highest grade each active role may see for the purpose (0: no clinical records at all).
cap[r] := c if {
	some r in active
	c := object.get(object.get(cfg.roles[r], "max_grade", {}), data.emr.lib.purpose, 0)
}

max_cap := max({0} | {c | some _, c in cap})

# Roles that act only within their grants' scope (vendors, II.1).
scoped_kind[r] := k if {
	some r in active
	k := data.emr.config.grants.scoped_roles[r]
	is_string(k)
}

all_scoped if {
	count(active) > 0
	every r in active {
		scoped_kind[r]
	}
}

# "*" = every type except the explicit-only ones (Binary: its content is opaque to the filter).
type_in(list, t) if {
	t != ""
	t in list
}

type_in(list, t) if {
	t != ""
	"*" in list
	not t in cfg.explicit_only_types
}

# Per active role, once per query, what it reads in lookup form (type_in without a function call
# per type): "star" if it reads "*"; "set" the types it names, or with "*" the explicit-only types
# it does not name; a type is read iff (it is in "set") != "star" (bound to a name first: opa fmt
# drops the parentheses, and `t in s.set != s.star` reads `t in (s.set != s.star)`). "kind": the
# grant kind that must also cover the type ("" for a role not scoped by grants).
readable[r] := {"star": star, "set": set, "kind": object.get(scoped_kind, r, "")} if {
	some r in active
	read := {x | some x in cfg.roles[r].read}
	star := "*" in read
	set := {true: {x | some x in cfg.explicit_only_types} - read, false: read}[star]
}

reads_type(r, t) if {
	s := readable[r]
	s.kind == ""
	t != ""
	named := t in s.set
	named != s.star
}

reads_type(r, t) if {
	s := readable[r]
	s.kind != ""
	t != ""
	named := t in s.set
	named != s.star
	data.emr.grants.covers_type(s.kind, t)
}

reads_any(r) if count(cfg.roles[r].read) > 0

some_reads(t) if {
	some r in active
	reads_type(r, t)
}

# II.1: a scoped role's grant must name this interaction on this type.
scope_ok(r, _) if not scoped_kind[r]

scope_ok(r, t) if {
	k := scoped_kind[r]
	data.emr.grants.in_scope(k, data.emr.lib.action_name(t.interaction, t.operation), t.type)
}

read_like(t) if t.kind == "read"

read_like(t) if {
	t.kind == "operation"
	t.operation in data.emr.lib.cfg.read_operations
}

op_type_ok(_, t) if not t.operation in data.emr.lib.cfg.read_operations

op_type_ok(_, t) if t.type == ""

op_type_ok(r, t) if reads_type(r, t.type)

# Reads, operations; $export and GraphQL are decided by emr.sidechannel, a batch by its entries.
permits(r, t) if {
	t.kind == "read"
	t.type == ""
	not scoped_kind[r]
	reads_any(r)
}

permits(r, t) if {
	t.kind == "read"
	reads_type(r, t.type)
	scope_ok(r, t)
}

permits(r, t) if {
	t.kind == "operation"
	t.operation in cfg.roles[r].operations
	op_type_ok(r, t)
	scope_ok(r, t)
}

permits(r, t) if {
	t.kind in {"export", "graphql"}
	reads_any(r)
}

permits(_, t) if t.kind == "container"

any_permits(t) if {
	some r in active
	permits(r, t)
}

type_blocked(t) if {
	read_like(t)
	t.type != ""
	not some_reads(t.type)
}

what(t) := t.type if t.type != ""

else := "records"

no_clinical_hint := {
	"en": " (security officers, inspectors and admins see no clinical records: use the admin API)",
	"zh": "(安全、稽查、系统管理人员无权查看临床病历,请使用管理接口)",
} if max_cap == 0

else := {"en": "", "zh": ""}

# II.1: permissions are bound to roles of a personal account.
deny contains r if {
	not data.emr.lib.exempt
	count(known) == 0
	r := data.emr.lib.reason(
		"role.unknown", "II.1",
		"the operator has no role known to the access policy: ask the medical affairs office to assign one",
		"操作人员没有访问策略认可的角色:请联系医务部门分配角色",
	)
}

# I.4: role-based permissions: one of the roles must be allowed the purpose (a student only TRAIN).
deny contains r if {
	not data.emr.lib.exempt
	data.emr.purpose.known
	count(known) > 0
	count(data.emr.purpose.claimants & known) == 0
	r := data.emr.lib.reason(
		"purpose.role", "I.4",
		sprintf("none of the roles %s may use records for purpose '%s'", [data.emr.lib.joined(known), data.emr.lib.purpose]),
		sprintf("角色 %s 均不得以“%s”为目的使用病历", [data.emr.lib.joined(known), data.emr.lib.purpose]),
	)
}

# I.4 minimum necessary: a type no active role may see is refused up front (the response filter
# withholds it wherever else it appears).
deny contains r if {
	count(active) > 0
	not all_scoped
	some t in data.emr.lib.targets
	type_blocked(t)
	r := data.emr.lib.reason(
		"type.not-visible", "I.4",
		sprintf("%sthe operator's roles may not see %s resources for purpose %s%s", [t.where, t.type, data.emr.lib.purpose, no_clinical_hint.en]),
		sprintf("%s操作人员的角色无权以 %s 为目的查看 %s 资源%s", [t.where, data.emr.lib.purpose, t.type, no_clinical_hint.zh]),
	)
}

# I.4: the interaction or operation must be granted to an active role.
deny contains r if {
	count(active) > 0
	not all_scoped
	some t in data.emr.lib.targets
	t.kind in {"read", "operation", "unknown"}
	not any_permits(t)
	not type_blocked(t)
	r := data.emr.lib.reason(
		"interaction.not-permitted", "I.4",
		sprintf("%s%s %s is not permitted for the operator's roles%s", [t.where, data.emr.lib.action_name(t.interaction, t.operation), what(t), no_clinical_hint.en]),
		sprintf("%s操作人员的角色无权执行 %s %s%s", [t.where, data.emr.lib.action_name(t.interaction, t.operation), what(t), no_clinical_hint.zh]),
	)
}

# II.1: a vendor acts only within its agreement's scope (interaction AND type, in one grant).
deny contains r if {
	all_scoped
	some t in data.emr.lib.targets
	t.kind in {"read", "operation", "unknown"}
	not any_permits(t)
	r := data.emr.lib.reason_with_detail(
		"grant.out-of-scope", "II.1",
		sprintf("%s%s %s is outside the scope of your vendor agreement: the agreement must name the interaction and the type", [t.where, data.emr.lib.action_name(t.interaction, t.operation), what(t)]),
		sprintf("%s%s %s 超出外部服务商授权协议的范围:协议须同时列明该操作和资源类型", [t.where, data.emr.lib.action_name(t.interaction, t.operation), what(t)]),
		{"grants": data.emr.grants.grant_ids(data.emr.grants.kinds.vendor)},
	)
}

# I.4 graded access: what a target reaches is at least this grade (type, patient flags); above the
# highest grade of the active roles for the purpose, nothing could be shown.
deny contains r if {
	count(active) > 0
	some t in data.emr.lib.targets
	f := data.emr.grading.floor(t)
	f > max_cap

	# The grade goes in detail: raised by a patient's flags, it would say the patient is a VIP.
	r := data.emr.lib.reason_with_detail(
		"grade.exceeded", "I.4",
		sprintf("%s%s reached here are above grade %d (by their resource type or their patients' flags), the highest your roles may see for purpose %s%s", [t.where, what(t), max_cap, data.emr.lib.purpose, no_clinical_hint.en]),
		sprintf("%s此处涉及的 %s 超出您的角色以 %s 为目的可查看的最高级别 %d 级(因资源类型或患者标记)%s", [t.where, what(t), data.emr.lib.purpose, max_cap, no_clinical_hint.zh]),
		{"grade": f},
	)
}
