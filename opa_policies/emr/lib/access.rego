# Shared vocabulary of the access rules: which of the operator's roles count for the purpose
# claimed, what they may do and see. Data: emr/config/access/data.json (data.emr.config.access).
package emr.access

import rego.v1

cfg := data.emr.config.access

# Roles of the operator that the policy knows (II.1: permissions are set per role).
known_roles contains r if {
	some r in input.subject.roles
	cfg.roles[r]
}

# I.2 / I.4: only the roles that may act for the claimed purpose take part in the decision.
active_roles contains r if {
	some r in known_roles
	input.purpose in cfg.roles[r].purposes
}

# I.4 minimum necessary: the resource types a role may see ("*" = all clinical types, except the
# explicit-only ones: a Binary's content is not visible to the filter, so it must be listed by name).
may_read_type(t) if {
	not t in cfg.explicit_only_types
	some r in active_roles
	some allowed in cfg.roles[r].read_types
	allowed in {"*", t}
}

may_read_type(t) if {
	t in cfg.explicit_only_types
	some r in active_roles
	t in cfg.roles[r].read_types
}

interaction_group(i) := g if {
	some g, members in cfg.interaction_groups
	i in members
}

may_perform(interaction, _) if interaction in cfg.always_allowed_interactions

may_perform(interaction, _) if {
	g := interaction_group(interaction)
	some r in active_roles
	g in cfg.roles[r].may
}

may_perform("operation", op) if {
	some r in active_roles
	op in cfg.roles[r].operations
}

# Fields a role withholds from a resource type (type-specific plus "*").
role_redactions(r, t) := array.concat(object.get(cfg.roles[r].redact, t, []), object.get(cfg.roles[r].redact, "*", []))

# Resources labelled very restricted (v3 Confidentiality V) are seen only by the listed roles.
sees_very_restricted if {
	some r in active_roles
	r in cfg.very_restricted_roles
}

reason(rule, clause, en, zh) := {"rule": rule, "clause": clause, "en": en, "zh": zh}
