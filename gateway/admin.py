"""The admin API under ``/admin``: the common path of every endpoint. JSON in and out.

The endpoints themselves belong to their controls (plugins/<control>/admin.py, gateway/audit/admin.py)
and are mounted here. Authentication is the FHIR path's (the same TokenVerifier: a personal
credential, II.1); each endpoint is open to the roles the config names. Every call, allowed or
refused, leaves one audit record committed before the answer is released (gateway/audited.py,
II.2): interaction ``admin``, the action, its target and outcome under ``extra.admin``, a patient
acted on in ``patients_targeted``. If the record cannot be written the caller gets 503 and the
change is not reported (it may still have been made: the store and the audit trail are the same
database, so a failed audit write after a committed change is an outage of both).

Refusals and input errors are OperationOutcomes in Chinese and English naming the rule, the
clause of 国卫办医政函〔2025〕262号 and (for a bad field) the field, in ``issue.expression``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway import rules
from gateway.audited import Reply, Surface, audited
from gateway.context import RequestContext
from gateway.errors import GatewayError, error
from gateway.fhir.body import read_all
from gateway.fhir.params import ID_RE
from gateway.fhir.request import FhirRequest
from gateway.hooks import AdminRoute
from gateway.runtime import GATEWAY, Gateway
from gateway.store import StoreConflict, StoreError, StoreInvalid, StoreNotFound

ADMIN_PREFIX = "/admin"
# RFC 3339 in UTC, "Z" only: what is stored is exactly what was sent, so it must be unambiguous.
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
PATIENT_RE = re.compile(r"^Patient/(?P<id>[^/]+)$")
MAX_TEXT = 256
MAX_REASON = 2000


@dataclass
class FieldError(Exception):
    """A request field is missing or wrong: 400, naming the field (``issue.expression``)."""

    field: str
    en: str
    zh: str
    clause: str = ""
    rule: str = rules.ADMIN_INVALID


@dataclass
class Call:
    """One admin call: the action and what it is about (for the audit record's ``extra.admin``)."""

    action: str
    clause: str
    target: dict[str, Any] = field(default_factory=dict)


AdminHandler = Callable[[web.Request, RequestContext, Gateway, Call], Awaitable[Reply]]


# --- validation helpers the controls' endpoints share ------------------------------------------------


def text_field(
    body: dict[str, Any], key: str, clause: str, *, required: bool, limit: int = MAX_TEXT
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise FieldError(key, f"'{key}' is required", f"缺少必填字段“{key}”", clause)
        return None
    if not isinstance(value, str) or not value.strip():
        raise FieldError(key, f"'{key}' must be non-empty text", f"“{key}”必须是非空文本", clause)
    if len(value) > limit:
        raise FieldError(
            key, f"'{key}' is longer than {limit} characters", f"“{key}”超过 {limit} 个字符", clause
        )
    return value


def required_text(body: dict[str, Any], key: str, clause: str, limit: int = MAX_TEXT) -> str:
    value = text_field(body, key, clause, required=True, limit=limit)
    assert value is not None
    return value


def time_field(body: dict[str, Any], key: str, clause: str) -> datetime:
    value = body.get(key)
    if value is None:
        raise FieldError(key, f"'{key}' is required", f"缺少必填字段“{key}”", clause)
    parsed = None
    if isinstance(value, str) and RFC3339_UTC.fullmatch(value):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None:
        raise FieldError(
            key,
            f"'{key}' must be an RFC 3339 time in UTC ending in Z, e.g. 2026-03-01T00:00:00Z",
            f"“{key}”必须是以 Z 结尾的 RFC 3339 UTC 时间,例如 2026-03-01T00:00:00Z",
            clause,
        )
    return parsed


def string_list(value: Any, key: str, clause: str, *, allowed: frozenset[str] | None = None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise FieldError(
            key, f"'{key}' must be a list of non-empty texts", f"“{key}”必须是非空文本的列表", clause
        )
    if allowed is not None:
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise FieldError(
                key,
                f"'{key}': '{unknown[0][:64]}' is not allowed",
                f"“{key}”中的“{unknown[0][:64]}”无效",
                clause,
            )
    return list(dict.fromkeys(value))  # in order, without repeats


def patient_field(value: Any, key: str = "patient", clause: str = "I.4") -> str:
    match = PATIENT_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None or not ID_RE.fullmatch(match["id"]) or match["id"] in (".", ".."):
        raise FieldError(
            key,
            f"'{key}' must be a patient reference 'Patient/<id>'",
            f"“{key}”必须是患者引用“Patient/<id>”",
            clause,
        )
    return value


def unknown_fields(body: dict[str, Any], known: frozenset[str], clause: str, prefix: str = "") -> None:
    extra = sorted(set(body) - known)
    if extra:
        name = prefix + extra[0]
        raise FieldError(name, f"unknown field '{name}'", f"未知字段“{name}”", clause)


def flag(request: web.Request, key: str) -> bool:
    value = request.query.get(key, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise FieldError(key, f"'{key}' must be true or false", f"“{key}”必须是 true 或 false")


async def json_body(request: web.Request, clause: str) -> dict[str, Any]:
    if request.content_type.lower() != "application/json":
        raise error(
            status=415,
            code="not-supported",
            rule=rules.ADMIN_MEDIA_TYPE,
            en=f"the admin API takes application/json, not '{request.content_type}'",
            zh=f"管理接口只接受 application/json,不接受“{request.content_type}”",
            clause=clause,
        )
    raw = await read_all(request, rules.ADMIN_BODY_TOO_LARGE)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FieldError("", "the body is not valid JSON", "请求体不是有效的 JSON", clause) from None
    if not isinstance(body, dict):
        raise FieldError("", "the body must be a JSON object", "请求体必须是 JSON 对象", clause)
    return body


def target_patient(ctx: RequestContext, call: Call, patient: str) -> None:
    """Put the patient into the audit record's patients_targeted (audit_patient table) and extra."""
    assert ctx.fhir is not None
    ctx.fhir.patients.add(patient)
    call.target["patient"] = patient


# --- the common path: authenticate, authorise, act ----------------------------------------------


async def _attempted_target(request: web.Request, ctx: RequestContext, call: Call) -> None:
    """What a refused caller tried to act on, for the audit record (best effort, never raises).

    An unauthorised attempt to seal, unseal or read a patient's seals is itself worth finding
    under that patient (II.2, II.3).
    """
    try:
        if "id" in request.match_info:
            call.target["grant_id"] = request.match_info["id"][:64]
        candidates = [request.query.get("patient")]
        if request.method == "POST" and request.content_type.lower() == "application/json":
            body = orjson.loads(await request.read())
            if isinstance(body, dict):
                candidates.append(body.get("patient"))
                if isinstance(body.get("operator"), str):
                    call.target["grant_operator"] = body["operator"][:MAX_TEXT]
        for candidate in candidates:
            if candidate is not None:
                target_patient(ctx, call, patient_field(candidate))
    except (FieldError, ValueError, web.HTTPException):
        pass


OUTCOMES = {401: "unauthenticated", 403: "refused", 404: "not-found", 409: "conflict", 503: "unavailable"}
STORE_ERRORS: dict[type[StoreError], tuple[int, str, str, str]] = {
    StoreNotFound: (404, "not-found", rules.ADMIN_NOT_FOUND, "未找到"),
    StoreConflict: (409, "conflict", rules.ADMIN_CONFLICT, "与当前状态冲突"),
    StoreInvalid: (400, "invalid", rules.ADMIN_INVALID, "数据无效"),
}


def outcome(status: int) -> str:
    if status < 300:
        return "done"
    if status in OUTCOMES:
        return OUTCOMES[status]
    return "invalid" if status < 500 else "error"


def _surface(action: str) -> Surface:
    def prepare(ctx: RequestContext) -> None:
        ctx.fhir = FhirRequest(method=ctx.method, interaction="admin", level="system")
        ctx.audit_extra["admin"] = {"action": action, "target": {}}  # the handler's Call fills target

    def finish(ctx: RequestContext, status: int) -> None:
        record = ctx.audit_extra["admin"]
        record["outcome"] = outcome(status)
        if not record["target"]:
            del record["target"]

    return Surface(
        content_type="application/json",
        internal=error(
            status=500,
            code="exception",
            rule=rules.INTERNAL,
            en="internal gateway error; the admin call may not have completed",
            zh="网关内部错误,管理操作可能未完成",
        ),
        unavailable=error(
            status=503,
            code="transient",
            rule=rules.AUDIT_UNAVAILABLE,
            en="the audit record could not be written; the outcome of this admin call is not reported, "
            "check its state before retrying",
            zh="审计记录写入失败,本次管理操作结果不予返回;请核实当前状态后再重试",
            clause="II.2",
        ),
        path=lambda request: request.path,
        prepare=prepare,
        finish=finish,
    )


def admin_handler(route: AdminRoute) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The audited handler of one admin endpoint: authenticate, check the role, act."""

    async def act(request: web.Request, ctx: RequestContext) -> Reply:
        gw = request.app[GATEWAY]
        call = Call(route.action, route.clause, ctx.audit_extra["admin"]["target"])
        try:
            ctx.operator = await gw.verifier.verify_headers(request.headers)
            if route.roles is not None:
                allowed = route.roles(gw.settings)
                if not set(ctx.operator.roles) & set(allowed):
                    ctx.decision = "deny"
                    await _attempted_target(request, ctx, call)
                    held = ", ".join(ctx.operator.roles) or "none"
                    raise error(
                        status=403,
                        code="forbidden",
                        rule=rules.ADMIN_ROLE,
                        en=f"{route.action} needs one of the roles {', '.join(allowed)} (yours: {held})",
                        zh=f"{route.action} 需要以下角色之一:{'、'.join(allowed)}(当前角色:{held})",
                        clause=route.clause,
                    )
                ctx.decision = "allow"
            reply: Reply = await route.handler(request, ctx, gw, call)
            return reply
        except FieldError as exc:
            call.target.setdefault("field", exc.field)
            raise error(
                status=400,
                code="invalid",
                rule=exc.rule,
                en=exc.en,
                zh=exc.zh,
                clause=exc.clause or route.clause,
                expression=exc.field,
            ) from None
        except StoreError as exc:
            status, code, rule, zh = STORE_ERRORS.get(type(exc), STORE_ERRORS[StoreInvalid])
            raise error(
                status=status, code=code, rule=rule, en=str(exc), zh=f"{zh}:{exc}", clause=route.clause
            ) from None

    return audited(_surface(route.action), act)


async def unknown(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """Anything else under /admin: 404, audited (an unaudited probe of the admin API is a gap)."""
    raise error(
        status=404,
        code="not-found",
        rule=rules.ADMIN_UNKNOWN_ENDPOINT,
        en=f"{request.method} {request.path[:200]} is not an admin endpoint",
        zh=f"不存在的管理接口:{request.method} {request.path[:200]}",
    )


def add_admin_routes(app: web.Application, routes: list[AdminRoute]) -> None:
    """Mount the controls' admin endpoints under /admin, each behind the audited common path."""
    for route in routes:
        handler = admin_handler(route)
        if route.method == "GET":
            app.router.add_get(ADMIN_PREFIX + route.path, handler)  # and HEAD, as HTTP asks
        else:
            app.router.add_route(route.method, ADMIN_PREFIX + route.path, handler)
    # Anything else under /admin (and a wrong method on a known path) is answered 404 and audited.
    # aiohttp tries the most specific path prefix first, so the routes above still win over this.
    fallback = admin_handler(AdminRoute("*", "", "admin.unknown", "", None, unknown))
    app.router.add_route("*", ADMIN_PREFIX, fallback)
    app.router.add_route("*", ADMIN_PREFIX + "/{tail:[\\s\\S]*}", fallback)


__all__ = [
    "ADMIN_PREFIX",
    "MAX_REASON",
    "MAX_TEXT",
    "AdminHandler",
    "Call",
    "FieldError",
    "GatewayError",
    "add_admin_routes",
    "flag",
    "json_body",
    "patient_field",
    "required_text",
    "string_list",
    "target_patient",
    "text_field",
    "time_field",
    "unknown_fields",
]
