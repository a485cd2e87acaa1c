"""The admin API under ``/admin``: grants (II.1), seals (I.4) and alerts (II.3). JSON in and out.

Authentication is the FHIR path's (the same TokenVerifier: a personal credential, II.1); each
endpoint is open to the roles the config names (``admin_grant_roles``, ``admin_seal_roles``).
Every call, allowed or refused, leaves one audit record committed before the answer is released,
exactly as on the FHIR path (II.2): interaction ``admin``, the action, its target and outcome under
``extra.admin``, a sealed patient in ``patients_targeted``. If the record cannot be written the
caller gets 503 and the change is not reported (it may still have been made; the store and the
audit trail are the same database, so a failed audit write after a committed change is an outage
of both).

Refusals and input errors are OperationOutcomes in Chinese and English naming the rule, the
clause of 国卫办医政函〔2025〕262号 and (for a bad field) the field, in ``issue.expression``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway.audit_search import AuditQuery
from gateway.balp import to_audit_event
from gateway.config import Settings
from gateway.context import RequestContext
from gateway.errors import GatewayError, error, operation_outcome
from gateway.explain import explain
from gateway.fhir.request import ID_RE, FhirRequest
from gateway.fhir.resource_types import RESOURCE_TYPES
from gateway.pipeline import GATEWAY, _json_response
from gateway.runtime import Gateway
from gateway.store import GRANT_KINDS, StoreConflict, StoreInvalid, StoreNotFound

log = structlog.get_logger("emrguard.admin")

ADMIN_PREFIX = "/admin"
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
# RFC 3339 in UTC, "Z" only: what is stored is exactly what was sent, so it must be unambiguous.
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
PURPOSE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$")  # as plugins/purpose.py
PATIENT_RE = re.compile(r"^Patient/(?P<id>[^/]+)$")
GRANT_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: The interactions gateway/fhir/request.py produces: what a grant's scope may name.
INTERACTIONS = frozenset(
    {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "history-system",
        "create",
        "search-type",
        "search-system",
        "capabilities",
        "batch",
        "transaction",
        "operation",
        "graphql",
    }
)
GRANT_FIELDS = frozenset(
    {"kind", "operator", "dept", "purposes", "start", "end", "scope", "agreement", "supervisor"}
)
SCOPE_FIELDS = frozenset({"types", "fields", "interactions"})
MAX_TEXT = 256
MAX_REASON = 2000
MAX_ALERTS = 1000


@dataclass
class FieldError(Exception):
    """A request field is missing or wrong: 400, naming the field (``issue.expression``)."""

    field: str
    en: str
    zh: str
    clause: str = ""
    rule: str = "admin.invalid"


@dataclass
class Call:
    """One admin call: the action, what it is about (for the audit record), who may make it."""

    action: str
    clause: str
    roles: Callable[[Settings], tuple[str, ...]] | None
    target: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[web.Request, RequestContext, Gateway, Call], Awaitable[tuple[int, Any]]]


# --- validation ---------------------------------------------------------------------------------


def _text(
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


def _time(body: dict[str, Any], key: str) -> datetime:
    value = body.get(key)
    if value is None:
        raise FieldError(key, f"'{key}' is required", f"缺少必填字段“{key}”", "II.1")
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
            "II.1",
        )
    return parsed


def _string_list(value: Any, key: str, clause: str, *, allowed: frozenset[str] | None = None) -> list[str]:
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


def _patient(value: Any, key: str = "patient") -> str:
    match = PATIENT_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None or not ID_RE.fullmatch(match["id"]) or match["id"] in (".", ".."):
        raise FieldError(
            key,
            f"'{key}' must be a patient reference 'Patient/<id>'",
            f"“{key}”必须是患者引用“Patient/<id>”",
            "I.4",
        )
    return value


def _unknown_fields(body: dict[str, Any], known: frozenset[str], clause: str, prefix: str = "") -> None:
    extra = sorted(set(body) - known)
    if extra:
        name = prefix + extra[0]
        raise FieldError(name, f"unknown field '{name}'", f"未知字段“{name}”", clause)


def validate_grant(body: Any) -> dict[str, Any]:
    """A grant as the store takes it, or FieldError naming the first wrong field (II.1)."""
    if not isinstance(body, dict):
        raise FieldError("", "the body must be a JSON object", "请求体必须是 JSON 对象", "II.1")
    _unknown_fields(body, GRANT_FIELDS, "II.1")
    kind = body.get("kind")
    if kind not in GRANT_KINDS:
        raise FieldError(
            "kind",
            f"'kind' must be one of {', '.join(GRANT_KINDS)}",
            f"“kind”必须是 {'、'.join(GRANT_KINDS)} 之一",
            "II.1",
        )
    operator = _text(body, "operator", "II.1", required=True)
    # Trainees are limited to their rotation's department and duration (II.1).
    dept = _text(body, "dept", "II.1", required=kind == "rotation")
    purposes = body.get("purposes")
    if not isinstance(purposes, list) or not purposes:
        raise FieldError(
            "purposes",
            "'purposes' must be a non-empty list of PurposeOfUse codes (e.g. TREAT, HRESCH)",
            "“purposes”必须是非空的使用目的代码列表(如 TREAT、HRESCH)",
            "II.1",
        )
    if not all(isinstance(p, str) and PURPOSE_RE.fullmatch(p) for p in purposes):
        raise FieldError(
            "purposes",
            "'purposes' must hold PurposeOfUse codes (e.g. TREAT, HRESCH)",
            "“purposes”只能包含使用目的代码(如 TREAT、HRESCH)",
            "II.1",
        )
    start, end = _time(body, "start"), _time(body, "end")
    if not start < end:
        raise FieldError("end", "'end' must be after 'start'", "“end”必须晚于“start”", "II.1")
    scope = body.get("scope", {})
    if not isinstance(scope, dict):
        raise FieldError("scope", "'scope' must be a JSON object", "“scope”必须是 JSON 对象", "II.1")
    _unknown_fields(scope, SCOPE_FIELDS, "II.1", "scope.")
    clean_scope: dict[str, Any] = {}
    if "types" in scope:
        clean_scope["types"] = _string_list(scope["types"], "scope.types", "II.1", allowed=RESOURCE_TYPES)
    if "interactions" in scope:
        clean_scope["interactions"] = _string_list(
            scope["interactions"], "scope.interactions", "II.1", allowed=INTERACTIONS
        )
    if "fields" in scope:
        fields = scope["fields"]
        if not isinstance(fields, dict):
            raise FieldError(
                "scope.fields",
                "'scope.fields' must map resource types to lists of element names",
                "“scope.fields”必须是资源类型到字段名列表的映射",
                "II.1",
            )
        clean_fields: dict[str, list[str]] = {}
        for rtype, names in fields.items():
            key = f"scope.fields.{rtype}"
            if rtype not in RESOURCE_TYPES or ("types" in clean_scope and rtype not in clean_scope["types"]):
                raise FieldError(
                    key,
                    f"'{key}': '{rtype[:64]}' is not one of the scope's resource types",
                    f"“{key}”:“{rtype[:64]}”不是授权范围内的资源类型",
                    "II.1",
                )
            clean_fields[rtype] = _string_list(names, key, "II.1")
        clean_scope["fields"] = clean_fields
    agreement = _text(body, "agreement", "II.1", required=kind == "vendor")
    supervisor = _text(body, "supervisor", "II.1", required=kind == "vendor")
    if kind == "vendor":
        # External service providers: scope, purpose and duration fixed by agreement (II.1).
        for key in ("types", "interactions"):
            if not clean_scope.get(key):
                raise FieldError(
                    f"scope.{key}",
                    f"a vendor grant needs a non-empty 'scope.{key}' (II.1: the agreement fixes the scope)",
                    f"外部服务商授权必须填写非空的“scope.{key}”(协议须明确访问范围)",
                    "II.1",
                )
    return {
        "kind": kind,
        "operator": operator,
        "dept": dept,
        "purposes": list(dict.fromkeys(p.upper() for p in purposes)),
        "start": body["start"],  # exactly as given: a grant never outlasts what was approved
        "end": body["end"],
        "scope": clean_scope,
        "agreement": agreement,
        "supervisor": supervisor,
    }


async def _json_body(request: web.Request, clause: str) -> dict[str, Any]:
    if request.content_type.lower() != "application/json":
        raise error(
            415,
            "not-supported",
            "admin.media-type",
            f"the admin API takes application/json, not '{request.content_type}'",
            f"管理接口只接受 application/json,不接受“{request.content_type}”",
            clause,
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise error(
            413, "too-long", "admin.body-too-large", "the request body is too large", "请求体过大"
        ) from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FieldError("", "the body is not valid JSON", "请求体不是有效的 JSON", clause) from None
    if not isinstance(body, dict):
        raise FieldError("", "the body must be a JSON object", "请求体必须是 JSON 对象", clause)
    return body


def _flag(request: web.Request, key: str) -> bool:
    value = request.query.get(key, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise FieldError(key, f"'{key}' must be true or false", f"“{key}”必须是 true 或 false")


def _grant_id(request: web.Request) -> str:
    grant_id = request.match_info["id"]
    if not GRANT_ID_RE.fullmatch(grant_id):
        raise StoreNotFound(f"no grant with id '{grant_id[:64]}'")
    return grant_id


def _target_patient(ctx: RequestContext, call: Call, patient: str) -> None:
    """Put the patient into the audit record's patients_targeted (audit_patient table) and extra."""
    assert ctx.fhir is not None
    ctx.fhir.patients.add(patient)
    call.target["patient"] = patient


# --- handlers -----------------------------------------------------------------------------------


async def create_grant(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """POST /admin/grants: a time-bound permission for one operator (II.1)."""
    grant = validate_grant(await _json_body(request, "II.1"))
    call.target.update(grant_operator=grant["operator"], kind=grant["kind"])
    assert ctx.operator is not None
    if grant["operator"] == ctx.operator.id:
        # II.1: permissions are given by the institution, not taken; nobody grants themselves.
        raise error(
            403,
            "forbidden",
            "grant.self",
            "an operator cannot grant access to their own account",
            "操作人员不得为本人账号授权",
            "II.1",
        )
    created = await gw.store.create_grant(grant, by=ctx.operator.id)
    call.target["grant_id"] = created["id"]
    call.target.update(start=created["start"], end=created["end"])
    return 201, created


async def list_grants(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """GET /admin/grants?operator=&include_revoked=: the periodic permission review (II.1)."""
    operator = request.query.get("operator") or None
    include_revoked = _flag(request, "include_revoked")
    if operator:
        call.target["grant_operator"] = operator
    grants = await gw.store.list_grants(operator, include_revoked=include_revoked)
    return 200, {"grants": grants}


async def get_grant(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """GET /admin/grants/{id}."""
    grant_id = request.match_info["id"]
    call.target["grant_id"] = grant_id[:64]
    grant = await gw.store.get_grant(_grant_id(request))
    if grant is None:
        raise StoreNotFound(f"no grant with id '{grant_id}'")
    return 200, grant


async def revoke_grant(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """POST /admin/grants/{id}/revoke {"reason"}: ends a grant now (II.1)."""
    call.target["grant_id"] = request.match_info["id"][:64]
    body = await _json_body(request, "II.1")
    _unknown_fields(body, frozenset({"reason"}), "II.1")
    reason = _text(body, "reason", "II.1", required=True, limit=MAX_REASON)
    call.target["reason"] = reason
    assert ctx.operator is not None and reason is not None
    revoked = await gw.store.revoke_grant(_grant_id(request), by=ctx.operator.id, reason=reason)
    call.target["grant_operator"] = revoked["operator"]
    return 200, revoked


async def seal(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """POST /admin/seals: 封存 a patient's records (I.4); in force when this returns."""
    body = await _json_body(request, "I.4")
    _unknown_fields(body, frozenset({"patient", "reason", "case_ref", "authorised"}), "I.4")
    patient = _patient(body.get("patient"))
    _target_patient(ctx, call, patient)
    reason = _text(body, "reason", "I.4", required=True, limit=MAX_REASON)
    case_ref = _text(body, "case_ref", "I.4", required=True)
    authorised = _string_list(body.get("authorised", []), "authorised", "I.4")
    call.target.update(reason=reason, case_ref=case_ref, authorised=authorised)
    assert ctx.operator is not None and reason is not None and case_ref is not None
    sealed = await gw.store.seal_patient(patient, reason, case_ref, authorised, by=ctx.operator.id)
    call.target["seal_id"] = sealed["id"]
    return 201, sealed


async def unseal(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """POST /admin/seals/unseal {"patient", "reason"}: lift the active seal (I.4)."""
    body = await _json_body(request, "I.4")
    _unknown_fields(body, frozenset({"patient", "reason"}), "I.4")
    patient = _patient(body.get("patient"))
    _target_patient(ctx, call, patient)
    reason = _text(body, "reason", "I.4", required=True, limit=MAX_REASON)
    call.target["reason"] = reason
    assert ctx.operator is not None and reason is not None
    lifted = await gw.store.unseal_patient(patient, by=ctx.operator.id, reason=reason)
    call.target["seal_id"] = lifted["id"]
    return 200, lifted


async def list_seals(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """GET /admin/seals?patient=: active seals (of one patient, or all)."""
    patient = request.query.get("patient")
    if patient:
        _target_patient(ctx, call, _patient(patient))
    return 200, {"seals": await gw.store.seal_history(patient or None, active_only=True)}


async def seal_history(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """GET /admin/seals/history?patient=: every seal, lifted ones too, newest first (II.2)."""
    patient = request.query.get("patient")
    if patient:
        _target_patient(ctx, call, _patient(patient))
    return 200, {"seals": await gw.store.seal_history(patient or None)}


async def list_alerts(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """GET /admin/alerts?limit=: anomalous or unauthorised access, newest first (II.3)."""
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ALERTS:
        raise FieldError(
            "limit",
            f"'limit' must be a whole number from 1 to {MAX_ALERTS}",
            f"“limit”必须是 1 到 {MAX_ALERTS} 的整数",
            "II.3",
        )
    return 200, {"alerts": await gw.store.list_alerts(int(raw))}


async def policy_explain(
    request: web.Request, ctx: RequestContext, gw: Gateway, call: Call
) -> tuple[int, Any]:
    """What the policy would decide and why, without touching the EMR (gateway/explain.py).

    The patients explained about are audited as targets: probing a patient's seal through explain
    is as traceable as reading the record (II.2).
    """
    out = await explain(gw, ctx, await _json_body(request, "I.3"))
    for patient in sorted(out["input"].get("patients") or {}):
        _target_patient(ctx, call, patient)
    return 200, out


def _audit_query(request: web.Request) -> AuditQuery:
    try:
        return AuditQuery.from_mapping(request.query)
    except ValueError:
        raise FieldError(
            "cursor", "'limit' and 'cursor' must be whole numbers", "“limit”和“cursor”必须是整数", "II.2"
        ) from None


async def search_audit(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """GET /admin/audit?patient=&operator=&from=&to=&purpose=&decision=&resource_type=&resource_id=&request_id=&cursor=&limit=

    Who saw what, when, why (II.2 可查询); newest first; follow next_cursor for the next page.
    The search itself is audited, with the patient searched for as a target.
    """
    query = _audit_query(request)
    if query.patient:
        _target_patient(ctx, call, _patient(query.patient))
    return 200, await gw.store.search_audit(query)


async def read_audit_record(
    request: web.Request, ctx: RequestContext, gw: Gateway, call: Call
) -> tuple[int, Any]:
    record = await gw.store.audit_record(request.match_info["request_id"])
    if record is None:
        raise error(
            404,
            "not-found",
            "audit.not-found",
            "no audit record with that request id",
            "没有该请求编号的审计记录",
            "II.2",
        )
    return 200, record


async def read_audit_event(
    request: web.Request, ctx: RequestContext, gw: Gateway, call: Call
) -> tuple[int, Any]:
    """The record as a FHIR AuditEvent after IHE BALP (gateway/balp.py)."""
    _, record = await read_audit_record(request, ctx, gw, call)
    return 200, to_audit_event(record)


async def export_audit(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """GET /admin/audit/export?from=&to=&cursor=: one page of AuditEvents (BALP) as a FHIR Bundle.

    Paged like the search (a ``next`` link carries the cursor), so a bulk export never holds the whole
    trail in memory; ``emrguard audit export`` writes NDJSON from the store directly.
    """
    query = _audit_query(request)
    page = await gw.store.search_audit(query)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": to_audit_event(r)} for r in page["records"]],
    }
    if page["next_cursor"] is not None:
        nxt = request.rel_url.update_query({"cursor": str(page["next_cursor"])})
        bundle["link"] = [{"relation": "next", "url": str(nxt)}]
    return 200, bundle


async def unknown(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> tuple[int, Any]:
    """Anything else under /admin: 404, audited (an unaudited probe of the admin API is a gap)."""
    raise error(
        404,
        "not-found",
        "admin.unknown-endpoint",
        f"{request.method} {request.path[:200]} is not an admin endpoint",
        f"不存在的管理接口:{request.method} {request.path[:200]}",
    )


# --- the common path: authenticate, authorise, act, audit -----------------------------------------


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
                _target_patient(ctx, call, _patient(candidate))
    except (FieldError, ValueError, web.HTTPException):
        pass


OUTCOMES = {401: "unauthenticated", 403: "refused", 404: "not-found", 409: "conflict", 503: "unavailable"}


def _outcome(status: int) -> str:
    if status < 300:
        return "done"
    if status in OUTCOMES:
        return OUTCOMES[status]
    return "invalid" if status < 500 else "error"


def _admin(
    action: str, clause: str, roles: Callable[[Settings], tuple[str, ...]] | None, fn: Handler
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY]
        ctx = RequestContext(
            request_id=uuid.uuid4().hex,
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            client_address=request.remote,
            user_agent=request.headers.get("User-Agent"),
            headers=request.headers,
        )
        ctx.fhir = FhirRequest(method=request.method, interaction="admin", level="system")
        call = Call(action, clause, roles)
        extra_headers: dict[str, str] = {}
        try:
            ctx.operator = await gw.verifier.verify(request.headers.get("Authorization"))
            if roles is not None:
                allowed = roles(gw.settings)
                if not set(ctx.operator.roles) & set(allowed):
                    ctx.decision = "deny"
                    await _attempted_target(request, ctx, call)
                    held = ", ".join(ctx.operator.roles) or "none"
                    raise error(
                        403,
                        "forbidden",
                        "admin.role",
                        f"{action} needs one of the roles {', '.join(allowed)} (yours: {held})",
                        f"{action} 需要以下角色之一:{'、'.join(allowed)}(当前角色:{held})",
                        clause,
                    )
                ctx.decision = "allow"
            status, body = await fn(request, ctx, gw, call)
            if action == "admin.grant.create":
                extra_headers["Location"] = f"{ADMIN_PREFIX}/grants/{body['id']}"
            response = _json_response(status, body, ctx, {**JSON_HEADERS, **extra_headers})
        except GatewayError as err:
            ctx.reasons = ctx.reasons or err.reasons
            response = _json_response(
                err.status, operation_outcome(err, ctx.request_id), ctx, {**err.headers, **JSON_HEADERS}
            )
        except FieldError as exc:
            err = error(400, "invalid", exc.rule, exc.en, exc.zh, exc.clause or clause)
            ctx.reasons = err.reasons
            outcome = operation_outcome(err, ctx.request_id)
            if exc.field:
                outcome["issue"][0]["expression"] = [exc.field]
            call.target.setdefault("field", exc.field)
            response = _json_response(400, outcome, ctx, JSON_HEADERS)
        except (StoreNotFound, StoreConflict, StoreInvalid) as exc:
            status, code, rule, zh = {
                StoreNotFound: (404, "not-found", "admin.not-found", "未找到"),
                StoreConflict: (409, "conflict", "admin.conflict", "与当前状态冲突"),
                StoreInvalid: (400, "invalid", "admin.invalid", "数据无效"),
            }[type(exc)]
            err = error(status, code, rule, str(exc), f"{zh}:{exc}", clause)
            ctx.reasons = err.reasons
            response = _json_response(status, operation_outcome(err, ctx.request_id), ctx, JSON_HEADERS)
        except Exception:  # a bug must not skip the audit
            log.exception("unhandled admin error", request_id=ctx.request_id, action=action)
            err = error(
                500,
                "exception",
                "gateway.internal",
                "internal gateway error; the admin call may not have completed",
                "网关内部错误,管理操作可能未完成",
            )
            ctx.reasons = err.reasons
            response = _json_response(500, operation_outcome(err, ctx.request_id), ctx, JSON_HEADERS)
        ctx.status = response.status
        ctx.audit_extra["admin"] = {
            "action": action,
            "outcome": _outcome(response.status),
            **({"target": call.target} if call.target else {}),
        }
        try:
            await gw.audit.write(ctx)
        except Exception:
            # II.2: grant and seal changes are traceable, or not reported at all.
            log.exception("admin audit record could not be written", request_id=ctx.request_id, action=action)
            err = error(
                503,
                "transient",
                "audit.unavailable",
                "the audit record could not be written; the outcome of this admin call is not reported, "
                "check its state before retrying",
                "审计记录写入失败,本次管理操作结果不予返回;请核实当前状态后再重试",
                "II.2",
            )
            return _json_response(503, operation_outcome(err, ctx.request_id), ctx, JSON_HEADERS)
        return response

    return handle


def _explain_roles(s: Settings) -> tuple[str, ...]:
    return s.admin_explain_roles


def _grant_roles(s: Settings) -> tuple[str, ...]:
    return s.admin_grant_roles


def _seal_roles(s: Settings) -> tuple[str, ...]:
    return s.admin_seal_roles


def _audit_roles(s: Settings) -> tuple[str, ...]:
    return s.admin_audit_roles


def _alert_roles(s: Settings) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.admin_seal_roles + s.admin_grant_roles))


def add_admin_routes(app: web.Application) -> None:
    """Mount the admin API under /admin (needs ``app[GATEWAY]``)."""
    r = app.router
    p = ADMIN_PREFIX
    r.add_post(f"{p}/grants", _admin("admin.grant.create", "II.1", _grant_roles, create_grant))
    r.add_get(f"{p}/grants", _admin("admin.grants.list", "II.1", _grant_roles, list_grants))
    r.add_get(f"{p}/grants/{{id}}", _admin("admin.grant.read", "II.1", _grant_roles, get_grant))
    r.add_post(f"{p}/grants/{{id}}/revoke", _admin("admin.grant.revoke", "II.1", _grant_roles, revoke_grant))
    r.add_post(f"{p}/seals", _admin("admin.seal", "I.4", _seal_roles, seal))
    r.add_post(f"{p}/seals/unseal", _admin("admin.unseal", "I.4", _seal_roles, unseal))
    r.add_get(f"{p}/seals", _admin("admin.seals.list", "I.4", _seal_roles, list_seals))
    r.add_get(f"{p}/seals/history", _admin("admin.seals.history", "I.4", _seal_roles, seal_history))
    r.add_get(f"{p}/alerts", _admin("admin.alerts.list", "II.3", _alert_roles, list_alerts))
    r.add_get(f"{p}/audit", _admin("admin.audit.search", "II.2", _audit_roles, search_audit))
    r.add_get(f"{p}/audit/export", _admin("admin.audit.export", "II.2", _audit_roles, export_audit))
    r.add_get(
        f"{p}/audit/{{request_id}}", _admin("admin.audit.read", "II.2", _audit_roles, read_audit_record)
    )
    r.add_get(
        f"{p}/audit/{{request_id}}/AuditEvent",
        _admin("admin.audit.balp", "II.2", _audit_roles, read_audit_event),
    )
    r.add_post(f"{p}/policy/explain", _admin("admin.policy.explain", "I.3", _explain_roles, policy_explain))
    # Anything else under /admin (and a wrong method on a known path) is answered 404 and audited.
    # aiohttp tries the most specific path prefix first, so routes added later still win over this.
    r.add_route("*", p, _admin("admin.unknown", "", None, unknown))
    r.add_route("*", p + "/{tail:[\\s\\S]*}", _admin("admin.unknown", "", None, unknown))
