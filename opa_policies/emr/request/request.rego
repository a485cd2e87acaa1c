# The request decision: may this operator, for this purpose, do this interaction on these targets?
# Asked once per request, before anything is forwarded. Contract: opa_policies/README.md.
package emr.request

import rego.v1

import data.emr.access

cfg := data.emr.config.access

decision := {
	"allow": count(deny) == 0,
	"reasons": [r | some r in deny],
	"obligations": [],
}

# Capability statements carry no patient data: no purpose needed.
exempt if input.action.interaction in cfg.always_allowed_interactions

purpose_missing if object.get(input, "purpose", null) == null

purpose_missing if input.purpose == ""

# I.2: EMR information is used only for medical care, teaching or research; the purpose must be said.
deny contains access.reason(
	"purpose.required", "I.2",
	"a purpose of use is required (header X-Purpose-Of-Use, e.g. TREAT, TRAIN, HRESCH)",
	"必须说明使用目的(请求头 X-Purpose-Of-Use,如 TREAT、TRAIN、HRESCH)",
) if {
	not exempt
	purpose_missing
}

# I.2: purposes other than care, teaching, research (and hospital management) are refused.
deny contains access.reason(
	"purpose.not-permitted", "I.2",
	sprintf("purpose '%s' is not medical care, teaching or research", [input.purpose]),
	sprintf("使用目的“%s”不属于医疗、教学或研究", [input.purpose]),
) if {
	not exempt
	not purpose_missing
	not cfg.purposes[input.purpose]
}

# II.1: permissions are bound to known roles of a personal account.
deny contains access.reason(
	"role.unknown", "II.1",
	"the operator has no role known to the access policy",
	"操作人员没有访问策略认可的角色",
) if {
	not exempt
	count(access.known_roles) == 0
}

# I.4: role-based permissions — the operator's roles must allow the purpose claimed.
deny contains access.reason(
	"purpose.role", "I.4",
	sprintf("none of the roles %v may use records for purpose '%s'", [input.subject.roles, input.purpose]),
	sprintf("角色 %v 均不得以“%s”为目的使用病历", [input.subject.roles, input.purpose]),
) if {
	not exempt
	cfg.purposes[input.purpose]
	count(access.known_roles) > 0
	count(access.active_roles) == 0
}

# I.4: the interaction must be granted to one of the operator's roles for this purpose.
deny contains access.reason(
	"interaction.not-permitted", "I.4",
	sprintf("%s %s is not permitted for the operator's roles", [action_name(input.action.interaction, input.action.operation), object.get(input.target, "type", "")]),
	sprintf("操作人员的角色无权执行 %s %s", [action_name(input.action.interaction, input.action.operation), object.get(input.target, "type", "")]),
) if {
	not input.action.interaction in {"batch", "transaction"}
	count(access.active_roles) > 0
	not access.may_perform(input.action.interaction, input.action.operation)
}

# I.4: every entry of a batch or transaction is decided like a request of its own.
deny contains access.reason(
	"interaction.not-permitted", "I.4",
	sprintf("Bundle.entry[%d]: %s %s is not permitted for the operator's roles", [i, action_name(e.interaction, e.operation), object.get(e, "type", "")]),
	sprintf("Bundle.entry[%d]:操作人员的角色无权执行 %s %s", [i, action_name(e.interaction, e.operation), object.get(e, "type", "")]),
) if {
	count(access.active_roles) > 0
	some i, e in input.target.entries
	not access.may_perform(e.interaction, e.operation)
}

# I.4 minimum necessary: reading a type the roles may not see is refused up front (the response
# filter removes such resources wherever else they appear).
deny contains access.reason(
	"type.not-visible", "I.4",
	sprintf("the operator's roles may not see %s resources", [t]),
	sprintf("操作人员的角色无权查看 %s 资源", [t]),
) if {
	count(access.active_roles) > 0
	some t in read_targets
	not access.may_read_type(t)
}

read_targets contains input.target.type if {
	access.interaction_group(input.action.interaction) == "read"
	input.target.type != null
}

read_targets contains e.type if {
	some e in input.target.entries
	access.interaction_group(e.interaction) == "read"
	e.type != null
}

# I.3 / I.4: a conditional write (update, patch or delete by search, or create with If-None-Exist)
# touches records the gateway cannot check before they change, and its 200/201 answers whether a
# hidden record matches. Refused until the write-governance model covers it.
deny contains access.reason(
	"write.conditional", "I.3",
	"conditional writes are not accepted through the gateway: read the record, then write it by id",
	"不接受条件写入:请先读取记录,再按 id 写入",
) if {
	input.action.conditional
	not cfg.conditional_writes_allowed
}

deny contains access.reason(
	"write.conditional", "I.3",
	sprintf("Bundle.entry[%d]: conditional writes are not accepted through the gateway", [i]),
	sprintf("Bundle.entry[%d]:不接受条件写入", [i]),
) if {
	some i, e in input.target.entries
	e.conditional
	not cfg.conditional_writes_allowed
}

# I.4: a count-only search answers with a number the per-resource filter cannot check.
deny contains access.reason(
	"search.count-only", "I.4",
	"_summary=count is not served: counts would include records the operator may not see",
	"不提供 _summary=count:计数会包含操作人员无权查看的记录",
) if {
	some v in object.get(input.target.params, "_summary", [])
	v == "count"
	not cfg.count_only_searches_allowed
}

action_name(interaction, op) := op if {
	interaction == "operation"
	op != null
} else := interaction
