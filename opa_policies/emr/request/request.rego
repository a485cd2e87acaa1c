# The request decision: may this operator, for this purpose, do this interaction on these targets?
# Asked once per request, before anything is forwarded. Each concern contributes its refusals
# (deny) and alerts; allowed iff nothing refuses. Contract: opa_policies/README.md.

# METADATA
# title: The request decision
# description: >-
#   data.emr.request.decision: allowed iff no concern refuses, with all the refusals and alerts.
#   Adds its own refusals of requests it cannot read (request.malformed) and of uses no single role
#   permits (role.combination).
# custom:
#   clauses: [I.3, I.4]
package emr.request

import rego.v1

decision := {
	"allow": count(deny) == 0,
	"reasons": [r | some r in deny],
	"obligations": array.concat(data.emr.care.request_obligations, data.emr.seal.request_obligations),
	"valid_until": data.emr.grants.valid_until,
}

# Every concern's refusals, one list: adding a concern is one line. (One rule over the list, not a
# rule per concern: each rule evaluation costs regorus microseconds; measured in opa_policies/README.md.)
deny contains r if {
	some refusals in [
		data.emr.purpose.deny,
		data.emr.roles.deny,
		data.emr.grants.deny,
		data.emr.write.deny,
		data.emr.care.deny,
		data.emr.seal.deny,
		data.emr.sidechannel.deny,
		combination,
		malformed,
	]
	some r in refusals
}

# Fail closed: a request the policy could not read as a target is refused, never waved through.
malformed contains r if {
	not data.emr.lib.exempt
	count(data.emr.lib.targets) != data.emr.lib.expected_targets
	r := data.emr.lib.reason(
		"request.malformed", "I.3",
		"the gateway's description of this request could not be read (action, target): refused",
		"无法解析网关提供的请求描述(action、target):拒绝",
	)
}

# A role's whole permission for one target: the action, the grade, every patient.
action_ok(r, t) if data.emr.roles.permits(r, t)

action_ok(r, t) if data.emr.write.permits(r, t)

role_permits(r, t) if {
	action_ok(r, t)
	data.emr.grading.floor(t) <= data.emr.roles.cap[r]
	every p in t.patients {
		p in data.emr.care.reach[r]
	}
}

any_action_ok(t) if {
	some r in data.emr.roles.active
	action_ok(r, t)
}

any_role_permits(t) if {
	some r in data.emr.roles.active
	role_permits(r, t)
}

# I.4: each part is allowed by some role, but no single role allows all of it (e.g. a nurse who is
# also a pharmacist: the pharmacist role reaches any patient, the nurse role reads Conditions).
combination contains r if {
	count(data.emr.roles.active) > 1 # with one active role a failing part has its own reason
	some t in data.emr.lib.targets
	any_action_ok(t)
	data.emr.grading.floor(t) <= data.emr.roles.max_cap
	count(data.emr.care.unrelated(t.patients)) == 0
	not any_role_permits(t)
	r := data.emr.lib.reason(
		"role.combination", "I.4",
		sprintf("%sno single role of yours (%s) permits %s %s for these patients: permissions of different roles are not combined", [t.where, data.emr.lib.joined(data.emr.roles.active), data.emr.lib.action_name(t.interaction, t.operation), data.emr.roles.what(t)]),
		sprintf("%s您的任一角色(%s)均不能单独对这些患者执行 %s %s:不同角色的权限不叠加", [t.where, data.emr.lib.joined(data.emr.roles.active), data.emr.lib.action_name(t.interaction, t.operation), data.emr.roles.what(t)]),
	)
}
