# I.4 minimum necessary, field by field: teaching (TRAIN) sees no direct identifiers of the patient,
# birth dates only as years and no display names in references; research (HRESCH) the same, with
# every id of the answer replaced by a pseudonym of the researcher's study (gateway/fhir/pseudonyms.py;
# what may not be searched or named for these purposes: emr.research); a vendor sees only the top-level
# elements its agreement names per type (II.1). A redaction applies only if every active role gets
# it (emr/config/fields/data.json: exempt_roles per purpose). Data: data.emr.config.fields.

# METADATA
# title: Field-level minimum necessary
# description: >-
#   Per purpose, the elements redacted, transformed (birth year, reference displays) or
#   pseudonymised, applied when every active role gets them. Vendors keep only the elements their
#   agreement names for the type.
# custom:
#   clauses: [I.4, II.1]
package emr.fields

import rego.v1

cfg := data.emr.config.fields

profile := cfg.profiles[data.emr.lib.purpose]

applies if {
	profile
	count(data.emr.roles.active) > 0
	every r in data.emr.roles.active {
		not r in object.get(cfg.exempt_roles, data.emr.lib.purpose, [])
	}
}

redact(t) := sort([f | some f in fs]) if {
	applies
	fs := {f | some k in {t, "*"}; some f in object.get(profile.redact, k, [])}
} else := []

profile_transforms(t) := array.concat(object.get(profile.transform, t, []), object.get(profile.transform, "*", [])) if applies

else := []

default pseudonymise := false

pseudonymise if {
	applies
	profile.pseudonymise == true
}

# Vendors (every active role scoped by grants): keep_only the elements their grants name for the type.
scoped_fields(t) := {f |
	some r in data.emr.roles.active
	k := data.emr.roles.scoped_kind[r]
	some f in data.emr.grants.fields(k, t)
}

keep_only(t) := [{"op": "keep_only", "fields": sort([f | some f in scoped_fields(t)])}] if data.emr.roles.all_scoped

else := []

transform(t) := array.concat(profile_transforms(t), keep_only(t))

# II.1: a vendor whose grant names no fields for the type gets none of it.
no_fields(t) if {
	data.emr.roles.all_scoped
	count(scoped_fields(t)) == 0
} else := false

no_fields_reason(t) := data.emr.lib.reason(
	"grant.no-fields", "II.1",
	sprintf("%s withheld: your vendor agreement names no elements of %s resources", [t, t]),
	sprintf("已隐去 %s:外部服务商授权协议未列明 %s 资源的任何字段", [t, t]),
)
