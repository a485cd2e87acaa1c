"""The path of one FHIR request through the gateway, top to bottom.

authenticate -> parse -> plugins add context -> request decision -> forward -> response decision
over every returned resource -> filter -> plugins' last look -> audit (committed) -> release.
Any failure on the way ends in an OperationOutcome, and is audited too; if the audit record cannot
be written, nothing but a 503 leaves (fail closed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import orjson
import structlog
from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import GatewayError, Reason, error, operation_outcome
from gateway.fhir.filter import apply_verdicts
from gateway.fhir.request import check_format, parse_params, parse_request
from gateway.fhir.resources import collect
from gateway.fhir.validate import validate_write
from gateway.policy import PolicyError
from gateway.proxy import FHIR_JSON, rewrite_url, rewrite_urls
from gateway.runtime import Gateway

log = structlog.get_logger("emrguard.pipeline")
T = TypeVar("T")
GATEWAY = web.AppKey("gateway", Gateway)
FHIR_PREFIX = "/fhir"
JSON_BODY_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json")
FORM_TYPE = "application/x-www-form-urlencoded"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _public_base(gw: Gateway, request: web.Request) -> str:
    return gw.settings.public_base_url.rstrip("/") or f"{request.scheme}://{request.host}{FHIR_PREFIX}"


def _json_response(
    status: int, body: Any, ctx: RequestContext, headers: dict[str, str] | None = None
) -> web.Response:
    out = {
        "Content-Type": f"{FHIR_JSON}; charset=utf-8",
        "X-Request-Id": ctx.request_id,
        "Cache-Control": "no-store",  # patient data is never cached by intermediaries
    }
    out.update(headers or {})
    return web.Response(status=status, body=orjson.dumps(body) if body is not None else b"", headers=out)


async def _read_body(request: web.Request, ctx: RequestContext) -> tuple[bytes, Any, list[tuple[str, str]]]:
    """Raw body, its JSON (or None), and form fields of a POST _search."""
    if not request.body_exists:
        return b"", None, []
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise error(
            413, "too-long", "fhir.body-too-large", "the request body is too large", "请求体过大"
        ) from None
    if not raw:
        return b"", None, []
    content_type = request.content_type.lower()
    if content_type == FORM_TYPE and ctx.path.endswith("_search"):
        return raw, None, parse_qsl(raw.decode("utf-8", errors="strict"), keep_blank_values=True)
    if content_type not in JSON_BODY_TYPES:
        raise error(
            415,
            "not-supported",
            "fhir.media-type",
            f"request body type '{content_type}' is not accepted; send application/fhir+json",
            f"不接受“{content_type}”格式的请求体;请使用 application/fhir+json",
        )
    try:
        return raw, orjson.loads(raw), []
    except orjson.JSONDecodeError as exc:
        raise error(
            400,
            "invalid",
            "fhir.bad-json",
            f"the request body is not valid JSON ({exc})",
            "请求体不是有效的 JSON",
        ) from None


async def handle_fhir(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    ctx = RequestContext(
        request_id=uuid.uuid4().hex,
        method=request.method,
        path=request.match_info.get("tail", ""),
        query_string=request.query_string,
        client_address=request.remote,
        user_agent=request.headers.get("User-Agent"),
        headers=request.headers,
    )
    # A client-supplied id could collide with another record; ours is unique, theirs is kept too.
    if "X-Request-Id" in request.headers:
        ctx.audit_extra["client_request_id"] = request.headers["X-Request-Id"][:128]
    if gw.settings.bare_passthrough:
        return await _pass_through(gw, request, ctx)
    try:
        response = await _decide_and_forward(gw, request, ctx)
    except GatewayError as err:
        ctx.reasons = ctx.reasons or err.reasons
        response = _json_response(err.status, operation_outcome(err, ctx.request_id), ctx, err.headers)
    except Exception:  # a bug must not leak data or skip the audit
        log.exception("unhandled error", request_id=ctx.request_id)
        err = error(
            500,
            "exception",
            "gateway.internal",
            "internal gateway error; the request was not completed",
            "网关内部错误,请求未完成",
        )
        ctx.reasons = err.reasons
        response = _json_response(500, operation_outcome(err, ctx.request_id), ctx)
    ctx.status = response.status
    try:
        await gw.audit.write(ctx)
    except Exception:
        # II.2: no disclosure without its record. Withhold everything.
        log.exception("audit record could not be written; response withheld", request_id=ctx.request_id)
        err = error(
            503,
            "transient",
            "audit.unavailable",
            "the audit record could not be written, so no data is released; try again",
            "审计记录写入失败,为保证可追溯不返回数据;请稍后重试",
            "II.2",
        )
        return _json_response(503, operation_outcome(err, ctx.request_id), ctx)
    return response


async def _decide_and_forward(gw: Gateway, request: web.Request, ctx: RequestContext) -> web.Response:
    # 1. Who is asking (II.1).
    ctx.operator = await gw.verifier.verify(request.headers.get("Authorization"))
    # 2. What they ask for: JSON only, a FHIR interaction the gateway understands.
    query = list(request.query.items())
    check_format(parse_params(query), request.headers.get("Accept", ""))
    raw_body, body, form = await _read_body(request, ctx)
    ctx.fhir = parse_request(ctx.method, ctx.path, query + form, body)
    if ctx.fhir.is_write:
        validate_write(ctx.fhir, request.content_type.lower())
    # 3. Context the decision needs (purpose, and later grants and seals).
    for plugin in gw.plugins:
        await plugin.before_decision(ctx)
    # 4. The request decision.
    ctx.policy_engine, ctx.policy_revision = gw.engine.name, gw.engine.revision
    now = _now_iso()
    decision_input = ctx.decision_input(now)
    decision = await _ask_policy(ctx, gw.engine.decide_request(decision_input))
    ctx.reasons, ctx.obligations = decision.reasons, decision.obligations
    if not decision.allow:
        ctx.decision = "deny"
        raise GatewayError(
            403, "forbidden", decision.reasons or [Reason("policy.deny", "refused by policy", "策略拒绝")]
        )
    ctx.decision = "allow"
    # 5. Forward.
    t0 = time.perf_counter()
    upstream = await gw.upstream.send(
        ctx.method, ctx.path, _upstream_query(ctx, query), request.headers, raw_body, ctx.request_id
    )
    ctx.upstream_ms = (time.perf_counter() - t0) * 1000
    ctx.upstream_status = upstream.status
    public_base = _public_base(gw, request)
    rewrite_urls(upstream.body, gw.upstream.base, public_base)
    headers = {k: rewrite_url(v, gw.upstream.base, public_base) for k, v in upstream.headers.items()}
    # 6. The response decision, one call for every resource that came back, then the filter.
    slots = collect(upstream.body)
    ctx.entries_returned = len(slots)
    verdicts: list[dict[str, Any]] = []
    if slots:
        response_input = dict(decision_input)
        response_input["entries"] = [slot.summary() for slot in slots]
        verdicts = await _ask_policy(ctx, gw.engine.decide_response(response_input))
    # Also with no resources at all: a bare total (_count=0) must not reveal a withheld count.
    result = apply_verdicts(upstream.body, slots, verdicts)
    ctx.entries_dropped, ctx.entries_redacted = result.dropped, result.redacted
    if result.root_dropped:
        raise GatewayError(
            403,
            "forbidden",
            result.root_reasons
            or [Reason("policy.withheld", "the resource is withheld by policy", "该资源依策略不予提供")],
        )
    ctx.patients_disclosed = result.disclosed_patients
    ctx.resources_disclosed = result.disclosed
    # 7. Plugins' last look (watermarks come here), then the caller's answer.
    for plugin in gw.plugins:
        await plugin.before_release(ctx, upstream.body)
    return _json_response(upstream.status, upstream.body, ctx, headers)


def _upstream_query(ctx: RequestContext, query: list[tuple[str, str]]) -> str:
    """The query string sent upstream, without `_elements`.

    `_elements=id` would strip the security labels and codes the response decision reads, so a
    very restricted resource could pass as an unlabelled one. FHIR lets a server return more than
    the elements asked for, so the gateway asks for whole resources and the filter sees everything.
    """
    if not any(k == "_elements" or k.startswith("_elements:") for k, _ in query):
        return ctx.query_string
    ctx.audit_extra["elements_ignored"] = [v for k, v in query if k.startswith("_elements")]
    return urlencode([(k, v) for k, v in query if not (k == "_elements" or k.startswith("_elements:"))])


async def _ask_policy(ctx: RequestContext, call: Awaitable[T]) -> T:
    """Time a policy call; no decision is a refusal (fail closed), audited as a deny."""
    t0 = time.perf_counter()
    try:
        return await call
    except PolicyError as exc:
        raise _policy_failure(ctx, exc) from None
    finally:
        ctx.policy_ms += (time.perf_counter() - t0) * 1000


def _policy_failure(ctx: RequestContext, exc: PolicyError) -> GatewayError:
    log.error("policy engine failure", request_id=ctx.request_id, error=str(exc))
    ctx.decision = "deny"
    err = error(
        503,
        "transient",
        "policy.unavailable",
        f"no policy decision could be made ({exc}); nothing was disclosed",
        "无法获得访问控制决策,未返回任何数据;请联系信息科",
        "I.4",
    )
    ctx.reasons = err.reasons
    return err


async def _pass_through(gw: Gateway, request: web.Request, ctx: RequestContext) -> web.Response:
    """`make bench` floor only: the same proxy with policy, filtering and audit switched off."""
    try:
        raw = await request.read() if request.body_exists else b""
        upstream = await gw.upstream.send(
            ctx.method, ctx.path, ctx.query_string, request.headers, raw, ctx.request_id
        )
    except GatewayError as err:
        return _json_response(err.status, operation_outcome(err, ctx.request_id), ctx)
    rewrite_urls(upstream.body, gw.upstream.base, _public_base(gw, request))
    return _json_response(upstream.status, upstream.body, ctx, dict(upstream.headers))
