# I.4 graded access with no side channels: a query must not learn what the per-resource filter
# would withhold. Reverse chaining (_has), chained parameters (subject.name, subject:Patient.name)
# and _filter match on records the operator never receives, so they are left to operators who may
# see every grade for the purpose; GraphQL answers cannot be filtered per resource; a count-only
# search answers with a number the filter cannot check; $export (II.2: sharing needs authorisation
# and approval) only under an export grant. Data: emr/config/sidechannel/data.json.

# METADATA
# title: No side channels
# description: >-
#   A query must not learn what the per-resource filter would withhold: _has, chained parameters,
#   _filter, searches that select by graded content (codes, security labels, text) above the
#   operator's grade in any spelling, GraphQL and count-only searches are refused. $export
#   (sharing) needs an export grant in force. Includes emr.research: no re-identification.
# custom:
#   clauses: [I.4, II.2]
package emr.sidechannel

import rego.v1

cfg := data.emr.config.sidechannel

side_key(k) if k == "_has"

side_key(k) if startswith(k, "_has:")

side_key(k) if k == "_filter"

side_key(k) if startswith(k, "_filter:")

side_key(k) if contains(k, ".")

side_keys(params) := {k | some k, _ in params; side_key(k)}

# I.4: teaching and research do not re-identify: no search by direct identifiers, and for
# pseudonymised answers no real ids (emr.research, decided with the side channels).
deny contains r if {
	some r in data.emr.research.deny
}

# I.4: _has, chains and _filter only for operators who see every grade for the purpose.
deny contains r if {
	count(data.emr.roles.active) > 0
	data.emr.roles.max_cap < cfg.min_grade_for_reference_search
	some t in data.emr.lib.targets
	keys := side_keys(t.params)
	count(keys) > 0
	r := data.emr.lib.reason(
		"search.side-channel", "I.4",
		sprintf("%ssearch parameters %s (_has, chained parameters, _filter) match on records you may not see: they need grade %d for purpose %s, your roles reach grade %d; search the referenced resource directly", [t.where, data.emr.lib.joined(keys), cfg.min_grade_for_reference_search, data.emr.lib.purpose, data.emr.roles.max_cap]),
		sprintf("%s检索参数 %s(_has、链式参数、_filter)会依据您无权查看的记录进行匹配:需以 %s 为目的可查看 %d 级,您的角色仅可查看 %d 级;请直接检索被引用的资源", [t.where, data.emr.lib.joined(keys), data.emr.lib.purpose, cfg.min_grade_for_reference_search, data.emr.roles.max_cap]),
	)
}

graphql_allowed if {
	some r in data.emr.roles.active
	r in cfg.graphql_roles
}

# I.4: GraphQL answers cannot be filtered resource by resource (roles listed in data only).
deny contains r if {
	some t in data.emr.lib.targets
	t.kind == "graphql"
	not graphql_allowed
	r := data.emr.lib.reason(
		"graphql.not-permitted", "I.4",
		sprintf("%sGraphQL is not served: its answers cannot be filtered resource by resource; use the REST search API", [t.where]),
		sprintf("%s不提供 GraphQL:其结果无法逐条过滤;请使用 REST 检索接口", [t.where]),
	)
}

split_types(t) := {x |
	some v in data.emr.lib.as_array(object.get(t.params, "_type", []))
	some x in split(data.emr.lib.as_string(v), ",")
	x != ""
}

# II.2: sharing in bulk only under an approved export grant covering the purpose and every type.
deny contains r if {
	some t in data.emr.lib.targets
	t.kind == "export"
	types := split_types(t)
	not data.emr.grants.export_covers(types)
	r := data.emr.lib.reason(
		"export.no-grant", "II.2",
		sprintf("%s$export needs _type naming the resource types (asked: '%s') and an export grant in force for purpose %s covering all of them: ask for an export approval", [t.where, data.emr.lib.joined(types), data.emr.lib.purpose]),
		sprintf("%s$export 须在 _type 中列明资源类型(本次:“%s”),并持有以 %s 为目的、覆盖全部类型的有效导出授权:请申请导出审批", [t.where, data.emr.lib.joined(types), data.emr.lib.purpose]),
	)
}

# I.4: a count answers with a number the per-resource filter cannot check.
deny contains r if {
	not cfg.count_only_searches_allowed
	some t in data.emr.lib.targets
	some v in data.emr.lib.as_array(object.get(t.params, "_summary", []))
	v == "count"
	r := data.emr.lib.reason(
		"search.count-only", "I.4",
		sprintf("%s_summary=count is not served: the count would include records you may not see", [t.where]),
		sprintf("%s不提供 _summary=count:计数会包含您无权查看的记录", [t.where]),
	)
}

# I.4: a search that selects records by their graded content (Condition?code=B20 by a grade-4 role)
# is a probe: even with every match withheld, paging links and totals would tell whether a patient
# has such a record (security review). Refused up front unless the operator's grade cap for the
# purpose covers every grade the search could select, in every spelling: each exact code graded with
# the canonical systems of emr.grading (HTTP://HL7.org/..., OIDs, "b20" = "B20.1" = "B201"), the
# highest over a comma list and over the parts of a composite (code$value); a modifier the policy
# cannot bound (:not, :in, :below, :above, :text, :of-type, ...), a whole system (system|), a text
# search (_text, _content) and a code without its system that is sensitive in any system count as
# the top grade; _security and _tag values as their label's grade. The parameters are data:
# emr/config/sidechannel/data.json (graded_params). POST _search forms and batch entries reach the
# same target.params.
param_kind(name) := k if {
	k := cfg.graded_params[name]
} else := "code" if {
	regex.match(cfg.graded_param_pattern, name)
} else := ""

# Per graded parameter of a target (key as sent), the highest grade it could select (0: none).
searched_grades(params) := {k: g |
	some k, vs in params
	parts := split(lower(k), ":")
	kind := param_kind(parts[0])
	kind != ""
	g := param_grade(kind, parts, vs)
	g > 0
}

param_grade(kind, parts, vs) := cfg.unbounded_grade if {
	kind == "text"
} else := cfg.unbounded_grade if {
	count(parts) > 1
	not parts[1] in cfg.bounded_modifiers
} else := 0 if {
	count(parts) > 1 # :missing selects by presence, not by content
} else := max(array.concat([0], [g |
	some v in values(vs)
	some item in split(data.emr.lib.as_string(v), ",")
	some part in split(item, "$")
	g := token_grade(kind, split(part, "|"))
]))

# The gateway sends each parameter as an array of strings; anything else is read as one value.
values(vs) := vs if is_array(vs)

else := [vs]

# A token: "code" or "|code" (no system), "system|code", "system|" (every code of the system).
token_grade(kind, bar) := value_grade(kind, "", trim_space(bar[0])) if {
	count(bar) == 1
} else := value_grade(kind, data.emr.grading.alias_of(bar[count(bar) - 2]), trim_space(bar[count(bar) - 1]))

value_grade(kind, alias, code) := cfg.unbounded_grade if {
	code == ""
	classification := data.emr.config.classification
	tables := {"code": classification.sensitive_codes, "label": classification.security_labels}
	tables[kind][alias]
} else := 0 if {
	code == ""
} else := cfg.unbounded_grade if {
	kind == "code"
	alias == ""
	data.emr.grading.code_grade("", code) > 0
} else := data.emr.grading.code_grade(alias, code) if {
	kind == "code"
} else := data.emr.grading.label_grade(alias, code)

deny contains r if {
	count(data.emr.roles.active) > 0
	some t in data.emr.lib.targets
	count(t.params) > 0
	graded := searched_grades(t.params)
	count(graded) > 0
	g := max([x | some x in graded])
	g > data.emr.roles.max_cap
	keys := {k | some k, x in graded; x > data.emr.roles.max_cap}
	r := data.emr.lib.reason_with_detail(
		"search.sensitive-code", "I.4",
		sprintf("%ssearch parameters %s select records by graded content (codes, security labels, text) up to grade %d: for purpose %s your roles reach grade %d, so the answer would tell whether such records exist; search without them, or by exact codes with their system that your grade covers", [t.where, data.emr.lib.joined(keys), g, data.emr.lib.purpose, data.emr.roles.max_cap]),
		sprintf("%s检索参数 %s 按分级内容(代码、安全标签、文本)筛选记录,最高可达 %d 级:您的角色以 %s 为目的仅可查看 %d 级,此类检索会暴露相关记录是否存在;请去掉这些参数,或仅按您可查看级别内、带代码系统的确切代码检索", [t.where, data.emr.lib.joined(keys), g, data.emr.lib.purpose, data.emr.roles.max_cap]),
		{"grades": graded},
	)
}
