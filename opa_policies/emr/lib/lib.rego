# Shared vocabulary of every concern: the input normalised once (so no rule negates a call on a
# missing field: regorus and OPA differ there), the targets a request touches, reasons and alerts.
# Data: emr/config/interactions/data.json (data.emr.config.interactions).
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

subject := as_object(object.get(input, "subject", {}))

subject_id := as_string(object.get(subject, "id", ""))

subject_dept := as_string(object.get(subject, "dept", ""))

subject_roles := {r | some r in as_array(object.get(subject, "roles", [])); is_string(r)}

subject_grants := [g | some g in as_array(object.get(subject, "grants", [])); is_object(g)]

# "" when absent, null or not a string.
purpose := as_string(object.get(input, "purpose", ""))

action := as_object(object.get(input, "action", {}))

interaction := as_string(object.get(action, "interaction", ""))

target := as_object(object.get(input, "target", {}))

# Per-patient context (departments, care team, flags, seal), keyed "Patient/<id>".
patients := as_object(object.get(input, "patients", {}))

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
	k := target_kind(where, i, op)
}

target_kind("", i, op) := kind(i, op)

target_kind(where, i, op) := entry_kind(i, op) if where != ""

entry_patients := {p | some e in as_array(object.get(target, "entries", [])); some p in patient_set(object.get(as_object(e), "patients", []))}

main_request := object.union(target, {
	"interaction": interaction,
	"operation": object.get(action, "operation", ""),
	"conditional": object.get(action, "conditional", false),
})

# A batch or transaction itself: its entries are decided one by one; patients the gateway found
# outside any entry are still checked (care, seal).
targets contains r if {
	not exempt
	container
	r := make_target("", main_request, patient_set(object.get(target, "patients", [])) - entry_patients)
}

targets contains r if {
	not exempt
	not container
	r := make_target("", main_request, patient_set(object.get(target, "patients", [])))
}

targets contains r if {
	not exempt
	some i, raw in as_array(object.get(target, "entries", []))
	e := as_object(raw)
	r := make_target(sprintf("Bundle.entry[%d]: ", [i]), e, patient_set(object.get(e, "patients", [])))
}

# The request itself and each of its entries: the policy must have read every one of them.
expected_targets := 1 + count(as_array(object.get(target, "entries", [])))

# Every patient the request touches.
request_patients := {p | some t in targets; some p in t.patients}

# --- reasons and alerts ---------------------------------------------------------------------------

reason(rule, clause, en, zh) := {"rule": rule, "clause": clause, "en": en, "zh": zh}

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
