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
#   _filter, searches by codes above the operator's grade, GraphQL and count-only searches are
#   refused. $export (sharing) needs an export grant in force.
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

# I.4: searching by a sensitive code above the operator's grade (Condition?code=B20 by a grade-4
# role) is a probe: even with every match withheld, paging links and totals would tell whether a
# patient has such a record (security review). Refused up front.
code_system_ok(parts, _) if count(parts) == 1

code_system_ok(parts, _) if {
	count(parts) == 2
	parts[0] == ""
}

code_system_ok(parts, alias) if {
	count(parts) == 2
	data.emr.grading.system_alias[parts[0]] == alias
}

searched_code_grades(params) := {g |
	tables := data.emr.config.classification.sensitive_codes
	some k, vs in params
	split(k, ":")[0] in cfg.sensitive_code_params
	some v in data.emr.lib.as_array(vs)
	some item in split(data.emr.lib.as_string(v), ",")
	parts := split(item, "|")
	code := upper(trim_space(parts[count(parts) - 1]))
	code != ""
	some alias, table in tables
	code_system_ok(parts, alias)
	some n in numbers.range(1, count(code))
	g := table[substring(code, 0, n)].grade
}

deny contains r if {
	count(data.emr.roles.active) > 0
	some t in data.emr.lib.targets
	grades := searched_code_grades(t.params)
	count(grades) > 0
	max(grades) > data.emr.roles.max_cap
	r := data.emr.lib.reason(
		"search.sensitive-code", "I.4",
		sprintf("%ssearching by a grade-%d code is not allowed for purpose %s: your roles reach grade %d, so the search would reveal whether such records exist", [t.where, max(grades), data.emr.lib.purpose, data.emr.roles.max_cap]),
		sprintf("%s不得以 %s 为目的按 %d 级敏感代码检索:您的角色仅可查看 %d 级,此类检索会暴露相关记录是否存在", [t.where, data.emr.lib.purpose, max(grades), data.emr.roles.max_cap]),
	)
}
