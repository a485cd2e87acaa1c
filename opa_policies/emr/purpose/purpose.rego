# I.2 压实主体责任: EMR information is used only for medical care, teaching or research (and the
# hospital's own management of it). The purpose of use is an HL7 v3 PurposeOfUse code; which roles
# may claim which purpose is data: emr/config/purpose/data.json (data.emr.config.purpose).

# METADATA
# title: Purpose of use
# description: >-
#   Every use states an HL7 v3 PurposeOfUse that is medical care, teaching, research or the
#   hospital's management of records, and that one of the operator's roles may claim. The emergency
#   purposes (ETREAT, BTG) also need a stated reason.
# custom:
#   clauses: [I.2, I.4]
package emr.purpose

import rego.v1

cfg := data.emr.config.purpose

missing if data.emr.lib.purpose == ""

known if cfg.purposes[data.emr.lib.purpose]

# The operator's roles that may claim the purpose (whether the policy knows them is emr.roles').
claimants contains r if {
	known
	some r in data.emr.lib.subject_roles
	data.emr.lib.purpose in object.get(cfg.role_purposes, r, [])
}

permitted_codes := data.emr.lib.joined({c | some c, _ in cfg.purposes})

# I.2: the purpose must be said.
deny contains r if {
	not data.emr.lib.exempt
	missing
	r := data.emr.lib.reason(
		"purpose.required", "I.2",
		sprintf("a purpose of use is required: send header X-Purpose-Of-Use with one of %s", [permitted_codes]),
		sprintf("必须说明使用目的:请在请求头 X-Purpose-Of-Use 中给出 %s 之一", [permitted_codes]),
	)
}

# I.2: marketing (HMARKT), payment (HPAYMT) or any other purpose is not care, teaching or research.
deny contains r if {
	not data.emr.lib.exempt
	not missing
	not known
	r := data.emr.lib.reason(
		"purpose.not-permitted", "I.2",
		sprintf("purpose '%s' is not medical care, teaching, research or hospital management: use one of %s", [data.emr.lib.purpose, permitted_codes]),
		sprintf("使用目的“%s”不属于医疗、教学、研究或医院管理:请使用 %s 之一", [data.emr.lib.purpose, permitted_codes]),
	)
}

# I.4 / II.3: the emergency purposes (ETREAT, BTG) carry the highest grade caps; claiming them
# without saying why (header X-Break-Glass-Reason) would be a silent way round the TREAT caps.
# Every emergency use states its reason, is audited with it and raises an alert.
deny contains r if {
	not data.emr.lib.exempt
	data.emr.lib.purpose in cfg.reason_required
	data.emr.care.break_glass_reason == ""
	r := data.emr.lib.reason(
		"purpose.reason-required", "I.4",
		sprintf("purpose %s needs a reason: send header X-Break-Glass-Reason saying why this emergency access is needed", [data.emr.lib.purpose]),
		sprintf("使用目的 %s 须说明理由:请在请求头 X-Break-Glass-Reason 中说明紧急访问的原因", [data.emr.lib.purpose]),
	)
}
