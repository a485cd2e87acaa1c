# I.4 封存: when a public-controversy event involves a patient's care, the patient's records are
# sealed and unrelated personnel may not access, browse or forward them. Sealed (input.patients[p].
# sealed) = refused to everyone but the seal's authorised operators, by every route: reads,
# searches, history, $everything, batch entries and writes (request), and any resource of the
# patient wherever it appears in a response. Every refusal and every authorised access is alerted
# (II.2 traceability, II.3 alerts). Break-the-glass never opens a seal.

# METADATA
# title: Sealed records (封存)
# description: >-
#   A sealed patient's records are refused, by every route, to everyone the seal does not name.
#   Every refused attempt and every authorised access raises an alert.
# custom:
#   clauses: [I.4, II.3]
package emr.seal

import rego.v1

sid := data.emr.lib.subject_id

# Once per query, over the patients' context.
sealed := {p | some p, ctx in data.emr.lib.patients; ctx.sealed == true}

allowed := {p |
	sid != ""
	some p in sealed
	sid in data.emr.lib.patients[p].seal.authorised
}

denied := sealed - allowed

# The seal's case reference: "case" (contract v2) or "case_ref" (the gateway's seal store).
cases(ps) := sort({c |
	some p in ps
	seal := data.emr.lib.as_object(object.get(data.emr.lib.patient_context(p), "seal", {}))
	c := data.emr.lib.as_string(object.get(seal, "case", object.get(seal, "case_ref", "")))
})

# The text names neither the patients nor the case (the requester may not have named the patient,
# and a case reference says what the public controversy is): both go in detail, for the audit record.
reason(where, where_zh, ps) := data.emr.lib.reason_with_detail(
	"seal.sealed", "I.4",
	sprintf("%sthe records of the patient(s) concerned are sealed: only the personnel the seal names may use them; ask the medical affairs office", [where]),
	sprintf("%s所涉患者的病历已封存:仅封存授权人员可访问;如确需使用请联系医务部门", [where_zh]),
	# discreet: shown only when it is the sole reason (gateway/errors.py shown): beside another
	# refusal it would tell anyone that the patient is under seal.
	{"patients": sort(ps), "cases": cases(ps), "discreet": true},
)

denied_alert(ps) := data.emr.lib.alert(
	"seal-access-denied", "high", ps,
	sprintf("%s tried to use the sealed records of %s", [data.emr.lib.subject_id, data.emr.lib.joined(ps)]),
	sprintf("%s 试图访问已封存的 %s 的病历", [data.emr.lib.subject_id, data.emr.lib.joined(ps)]),
)

allowed_alert(ps) := data.emr.lib.alert(
	"seal-access", "medium", ps,
	sprintf("authorised access by %s to the sealed records of %s", [data.emr.lib.subject_id, data.emr.lib.joined(ps)]),
	sprintf("%s 经授权访问已封存的 %s 的病历", [data.emr.lib.subject_id, data.emr.lib.joined(ps)]),
)

# I.4 封存: any target touching a patient sealed to the operator is refused (and alerted).
deny contains r if {
	some t in data.emr.lib.targets
	ps := t.patients & denied
	count(ps) > 0
	r := reason(t.where, t.where, ps)
}

request_denied := data.emr.lib.request_patients & denied

request_allowed := data.emr.lib.request_patients & allowed

# No alert (and no message) unless some patient of the input is sealed.
request_obligations := array.concat(denied_alerts(request_denied), allowed_alerts(request_allowed)) if count(sealed) > 0

else := []

# The alerts only when some patient is concerned (no message is built otherwise).
denied_alerts(ps) := [denied_alert(ps)] if count(ps) > 0

else := []

allowed_alerts(ps) := [allowed_alert(ps)] if count(ps) > 0

else := []
