# The response decision: one verdict per resource that comes back (search entries, includes,
# contained resources, $everything, batch/transaction responses), in the order of input.entries.
# Asked once per response, never once per resource. Contract: opa_policies/README.md.
package emr.response

import rego.v1

import data.emr.access

confidentiality_system := "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

decision := {"verdicts": [verdict(e) | some e in input.entries]}

verdict(e) := {
	"keep": count(drops) == 0,
	"redact": object.get(redactions_by_type, e.type, []),
	"reasons": [r | some r in drops],
} if {
	drops := type_drop(e) | label_drop(e)
}

# What depends only on the operator and purpose is computed once per response, not per entry:
# a 100-entry search costs one role lookup, not a hundred.
visible_types contains t if {
	some r in access.active_roles
	some t in access.cfg.roles[r].read_types
}

type_visible(t) if {
	"*" in visible_types
	not t in access.cfg.explicit_only_types
}

type_visible(t) if t in visible_types

redactions_by_type[t] := sort([f | some f in redactions(t)]) if {
	some t in {e.type | some e in input.entries}
}

# I.4 minimum necessary: a resource type the roles may not see is withheld wherever it appears.
type_drop(e) := set() if {
	type_visible(e.type)
} else := {access.reason(
	"type.not-visible", "I.4",
	sprintf("%s withheld: the operator's roles may not see this resource type", [e.type]),
	sprintf("已隐去 %s:操作人员的角色无权查看该类资源", [e.type]),
)}

# I.4 graded access: records labelled very restricted (Confidentiality V) only for listed roles.
label_drop(e) := {access.reason(
	"label.very-restricted", "I.4",
	sprintf("%s withheld: it is labelled very restricted", [e.type]),
	sprintf("已隐去 %s:该记录标记为极高敏感", [e.type]),
)} if {
	some s in e.security
	s.system == confidentiality_system
	s.code == "V"
	not access.sees_very_restricted
} else := set()

# I.4 field-level minimum necessary: a field is withheld when every active role withholds it.
redactions(t) := {f |
	some r in access.active_roles
	some f in access.role_redactions(r, t)
	every other in access.active_roles {
		f in access.role_redactions(other, t)
	}
}
