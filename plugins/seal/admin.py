"""``/admin/seals``: 封存 a patient's records (I.4), lift a seal, list active seals and the history.
Every call is audited by the common admin path (gateway/admin.py), the patient as its target.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import (
    MAX_REASON,
    Call,
    json_body,
    patient_field,
    string_list,
    target_patient,
    text_field,
    unknown_fields,
)
from gateway.audited import Reply
from gateway.context import RequestContext
from gateway.hooks import AdminRoute
from gateway.runtime import Gateway
from plugins.seal.store import SealStore


async def seal(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """POST /admin/seals: 封存 a patient's records (I.4); in force when this returns."""
    body = await json_body(request, "I.4")
    unknown_fields(body, frozenset({"patient", "reason", "case_ref", "authorised"}), "I.4")
    patient = patient_field(body.get("patient"))
    target_patient(ctx, call, patient)
    reason = text_field(body, "reason", "I.4", required=True, limit=MAX_REASON)
    case_ref = text_field(body, "case_ref", "I.4", required=True)
    authorised = string_list(body.get("authorised", []), "authorised", "I.4")
    call.target.update(reason=reason, case_ref=case_ref, authorised=authorised)
    assert ctx.operator is not None and reason is not None and case_ref is not None
    sealed = await SealStore(gw.store).seal_patient(patient, reason, case_ref, authorised, by=ctx.operator.id)
    call.target["seal_id"] = sealed["id"]
    return Reply(201, sealed)


async def unseal(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """POST /admin/seals/unseal {"patient", "reason"}: lift the active seal (I.4)."""
    body = await json_body(request, "I.4")
    unknown_fields(body, frozenset({"patient", "reason"}), "I.4")
    patient = patient_field(body.get("patient"))
    target_patient(ctx, call, patient)
    reason = text_field(body, "reason", "I.4", required=True, limit=MAX_REASON)
    call.target["reason"] = reason
    assert ctx.operator is not None and reason is not None
    lifted = await SealStore(gw.store).unseal_patient(patient, by=ctx.operator.id, reason=reason)
    call.target["seal_id"] = lifted["id"]
    return Reply(200, lifted)


async def list_seals(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """GET /admin/seals?patient=: active seals (of one patient, or all)."""
    patient = request.query.get("patient")
    if patient:
        target_patient(ctx, call, patient_field(patient))
    return Reply(200, {"seals": await SealStore(gw.store).seal_history(patient or None, active_only=True)})


async def seal_history(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """GET /admin/seals/history?patient=: every seal, lifted ones too, newest first (II.2)."""
    patient = request.query.get("patient")
    if patient:
        target_patient(ctx, call, patient_field(patient))
    return Reply(200, {"seals": await SealStore(gw.store).seal_history(patient or None)})


def _roles(settings: Any) -> tuple[str, ...]:
    return settings.admin_seal_roles


ROUTES = [
    AdminRoute("POST", "/seals", "admin.seal", "I.4", _roles, seal),
    AdminRoute("POST", "/seals/unseal", "admin.unseal", "I.4", _roles, unseal),
    AdminRoute("GET", "/seals", "admin.seals.list", "I.4", _roles, list_seals),
    AdminRoute("GET", "/seals/history", "admin.seals.history", "I.4", _roles, seal_history),
]
