"""``POST /admin/policy/explain``: what would the policy decide, and why — without touching the EMR.

For security teams tuning Rego (I.3 supervision of permissions): given an operator (or a token), a
purpose and a FHIR request, it builds exactly the input the gateway would build, asks the
configured engine, and answers with the decision, its reasons (the rules that fired) and the
input itself. Patient facts that would come from the upstream (departments, care team, flags)
are taken from the body when given, never fetched; grants and seals come from the store as usual
(each loaded control adds its facts through its ``explain_facts`` hook, gateway/hooks.py).
Optional ``resources`` are judged with the response decision, as if the upstream had returned them.

    {"operator": {"id": "nurse-zhao", "roles": ["nurse"], "dept": "cardiology"},
     "purpose": "TREAT", "break_glass_reason": null,
     "request": {"method": "GET", "url": "Condition?patient=Patient/p1", "body": null},
     "patients": {"Patient/p1": {"departments": ["psychiatry"]}},
     "resources": [{"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}]}
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from gateway import rules
from gateway.admin import Call, json_body, target_patient
from gateway.audited import Reply
from gateway.auth import Operator
from gateway.context import RequestContext
from gateway.errors import GatewayError, error
from gateway.fhir.request import parse_request
from gateway.fhir.resources import collect
from gateway.hooks import AdminRoute, Plugin
from gateway.policy import PolicyError
from gateway.runtime import Gateway
from gateway.store import utc_now

BAD_REQUEST = "explain.bad-request"


def _bad(what: str, zh: str) -> GatewayError:
    return error(status=400, code="invalid", rule=BAD_REQUEST, en=what, zh=zh)


async def explain(gw: Gateway, ctx: RequestContext, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        raise _bad("body needs 'request': {method, url, body}", "请求体需要 'request': {method, url, body}")
    if isinstance(body.get("token"), str):
        operator = await gw.verifier.verify(f"Bearer {body['token']}")
    elif isinstance(body.get("operator"), dict) and isinstance(body["operator"].get("id"), str):
        o = body["operator"]
        operator = Operator(
            id=o["id"],
            name=str(o.get("name", "")),
            roles=tuple(str(r) for r in o.get("roles") or []),
            dept=str(o.get("dept", "")),
            org=str(o.get("org", "")),
            claims={},
        )
    else:
        raise _bad(
            "give 'operator': {id, roles, dept} or 'token'", "请提供 'operator': {id, roles, dept} 或 'token'"
        )
    req = body["request"]
    url = urlsplit(str(req.get("url", "")))
    sim = RequestContext(
        request_id=ctx.request_id,
        method=str(req.get("method", "GET")).upper(),
        path=url.path.lstrip("/"),
        query_string=url.query,
        client_address=None,
        user_agent="explain",
        # The reason goes where a real request carries it, so the break-glass control judges it alike.
        headers={"X-Break-Glass-Reason": str(body["break_glass_reason"])}
        if body.get("break_glass_reason")
        else {},
    )
    sim.operator = operator
    sim.purpose = body.get("purpose")
    sim.fhir = parse_request(
        sim.method, sim.path, parse_qsl(url.query, keep_blank_values=True), req.get("body")
    )
    given = (
        {p: facts for p, facts in (body.get("patients") or {}).items() if isinstance(facts, dict)}
        if isinstance(body.get("patients"), dict)
        else {}
    )
    resources: list[Any] = body["resources"] if isinstance(body.get("resources"), list) else []
    slots = [s for r in resources if isinstance(r, dict) for s in collect(r)]
    patients = set(sim.fhir.all_patients()) | {p for s in slots for p in s.summary()["patients"]}
    for p in patients:  # every patient explained about is in the input (and audited as a target)
        sim.patient_context.setdefault(p, {})
    await gw.hooks.explain_facts(sim, patients, given)
    decision_input = sim.decision_input(body.get("time") or utc_now())
    try:
        decision = await gw.engine.decide_request(decision_input)
        verdicts = (
            (
                await gw.engine.decide_response(dict(decision_input, entries=[s.summary() for s in slots]))
            ).verdicts
            if slots
            else []
        )
    except PolicyError as exc:
        raise error(
            status=503,
            code="transient",
            rule=rules.POLICY_UNAVAILABLE,
            en=str(exc),
            zh="无法获得访问控制决策",
        ) from None
    ctx.audit_extra["explained_operator"] = operator.id
    return {
        "decision": {
            "allow": decision.allow,
            "reasons": [r.as_dict() for r in decision.reasons],
            "obligations": decision.obligations,
        },
        "rules_fired": sorted(
            {r.rule for r in decision.reasons}
            | {str(x.get("rule")) for v in verdicts for x in v.get("reasons") or [] if isinstance(x, dict)}
        ),
        "verdicts": verdicts,
        "policy_engine": gw.engine.name,
        "policy_revision": gw.engine.revision,
        "input": decision_input,
    }


async def policy_explain(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """What the policy would decide and why, without touching the EMR (explain above).

    The patients explained about are audited as targets: probing a patient's seal through explain
    is as traceable as reading the record (II.2).
    """
    out = await explain(gw, ctx, await json_body(request, "I.3"))
    for patient in sorted(out["input"].get("patients") or {}):
        target_patient(ctx, call, patient)
    return Reply(200, out)


def _roles(settings: Any) -> tuple[str, ...]:
    return settings.admin_explain_roles


class ExplainPlugin(Plugin):
    name = "explain"

    def admin_routes(self) -> list[AdminRoute]:
        return [AdminRoute("POST", "/policy/explain", "admin.policy.explain", "I.3", _roles, policy_explain)]


PLUGIN = ExplainPlugin
