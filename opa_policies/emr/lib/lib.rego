# Shared vocabulary of every concern: the input normalised once (so no rule negates a call on a
# missing field: regorus and OPA differ there), the targets a request touches, reasons and alerts.
# Data: emr/config/interactions/data.json (data.emr.config.interactions).

# METADATA
# title: Shared vocabulary
# description: >-
#   The input normalised once (so that no rule negates a call on a missing field) and the targets of
#   a request: the request itself and every batch or transaction entry, so that every use of record
#   content is decided. Also the shapes of reasons and of II.3 alerts shared by every concern.
# custom:
#   clauses: [I.1, II.3]
package emr.lib

import rego.v1

cfg := data.emr.config.interactions

as_object(x) := x if is_object(x)

else := {}

as_array(x) := x if is_array(x)

else := []

as_string(x) := x if is_string(x)

else := ""

# --- the input, normalised ----------------------------------------------------------------------

# Each normalised value is a rule with an else (no function call: each costs regorus microseconds).
subject := s if {
	s := input.subject
	is_object(s)
} else := {}

subject_id := x if {
	x := subject.id
	is_string(x)
} else := ""

subject_dept := x if {
	x := subject.dept
	is_string(x)
} else := ""

subject_roles := {r | rs := subject.roles; is_array(rs); some r in rs; is_string(r)}

subject_grants := [g | gs := subject.grants; is_array(gs); some g in gs; is_object(g)]

# "" when absent, null or not a string.
purpose := p if {
	p := input.purpose
	is_string(p)
} else := ""

action := a if {
	a := input.action
	is_object(a)
} else := {}

interaction := i if {
	i := action.interaction
	is_string(i)
} else := ""

target := t if {
	t := input.target
	is_object(t)
} else := {}

# Per-patient context (departments, care team, flags, seal), keyed "Patient/<id>".
patients := ps if {
	ps := input.patients
	is_object(ps)
} else := {}

patient_context(p) := as_object(object.get(patients, p, {}))

patient_set(x) := {p | some p in as_array(x); is_string(p)}

# Capability statements carry no patient data.
exempt if interaction in cfg.exempt_interactions

container if interaction in cfg.containers

# --- what kind of use an interaction is -----------------------------------------------------------

kind(i, _) := k if {
	i != "operation"
	k := object.get(cfg.kinds, i, "unknown")
}

kind("operation", op) := object.get(cfg.operation_kinds, op, "operation")

# An entry of a batch or transaction is never itself a container.
entry_kind(i, op) := k if {
	k0 := kind(i, op)
	k := object.get({"container": "unknown"}, k0, k0)
}

action_name(i, op) := op if {
	i == "operation"
	op != ""
}

else := i

# --- targets: the main request and every batch/transaction entry, each decided on its own --------

# A conditional write (by search, or a create with If-None-Exist).
conditional(x) := true in {object.get(x, "conditional", false) == true, count(as_object(object.get(x, "if_none_exist", {}))) > 0}

make_target(where, x, patient_list) := {
	"where": where,
	"interaction": i,
	"operation": op,
	"kind": k,
	"type": as_string(object.get(x, "type", "")),
	"patients": patient_list,
	"params": as_object(object.get(x, "params", {})),
	"conditional": conditional(x),
} if {
	i := as_string(object.get(x, "interaction", ""))
	op := as_string(object.get(x, "operation", ""))
	k := entry_kind(i, op)
}

target_entries := es if {
	es := target.entries
	is_array(es)
} else := []

entry_patients := {p | some e in target_entries; is_object(e); ps := e.patients; is_array(ps); some p in ps; is_string(p)}

main_operation := o if {
	o := action.operation
	is_string(o)
} else := ""

main_type := t if {
	t := target.type
	is_string(t)
} else := ""

main_params := p if {
	p := target.params
	is_object(p)
} else := {}

main_conditional if action.conditional == true

main_conditional if {
	x := target.if_none_exist
	is_object(x)
	count(x) > 0
}

default main_conditional := false

main_patients := {p | ps := target.patients; is_array(ps); some p in ps; is_string(p)}

# The request itself (a batch or transaction: its entries are decided one by one; patients the
# gateway found outside any entry are still checked: care, seal).
main_target := {
	"where": "",
	"interaction": interaction,
	"operation": main_operation,
	"kind": kind(interaction, main_operation),
	"type": main_type,
	"patients": ps,
	"params": main_params,
	"conditional": main_conditional,
} if {
	not exempt
	ps := main_patients - entry_patients
	container
} else := {
	"where": "",
	"interaction": interaction,
	"operation": main_operation,
	"kind": kind(interaction, main_operation),
	"type": main_type,
	"patients": main_patients,
	"params": main_params,
	"conditional": main_conditional,
} if {
	not exempt
}

targets contains t if t := main_target

targets contains r if {
	not exempt
	some i, raw in target_entries
	e := as_object(raw)
	r := make_target(sprintf("Bundle.entry[%d]: ", [i]), e, patient_set(object.get(e, "patients", [])))
}

# The request itself and each of its entries: the policy must have read every one of them.
expected_targets := 1 + count(target_entries)

# Every patient the request touches.
request_patients := {p | some t in targets; some p in t.patients}

# --- reasons and alerts ---------------------------------------------------------------------------

reason(rule, clause, en, zh) := {"rule": rule, "clause": clause, "en": en, "zh": zh}

# A reason's en and zh name only what the requester sent (the type, the purpose, their own roles):
# never another patient, a seal's case, a grant, a record's grade or labels. Such specifics go in
# detail, which the gateway keeps in the audit record and never shows (gateway/errors.py).
reason_with_detail(rule, clause, en, zh, detail) := {"rule": rule, "clause": clause, "en": en, "zh": zh, "detail": detail}

# II.3: alerts on anomalous or privileged access. The gateway carries out only type "alert".
alert(event, severity, ps, en, zh) := {
	"type": "alert",
	"event": event,
	"severity": severity,
	"patients": sort([p | some p in ps]),
	"en": en,
	"zh": zh,
}

joined(s) := concat(", ", sort([x | some x in s]))
