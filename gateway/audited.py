"""The audited request: the one place the II.2 invariant lives — no answer without its record.

Every handler under ``/fhir`` and ``/admin`` is wrapped by :func:`audited`, and so is every
refusal at the edge (gateway/app.py: an unknown path, a request over the size limits) through
:func:`refuse` and :data:`EDGE_SURFACE`. The wrapper makes the request's context and id (bound
into structlog's contextvars, so every log line of the request carries it), runs the handler,
turns any exception into a FHIR ``OperationOutcome`` (zh + en), and commits the audit record.
Only then is the answer released; if the record cannot be written the caller gets 503 and nothing
else (fail closed). Handlers return data (:class:`Reply`) and raise
:class:`~gateway.errors.GatewayError`; they never build responses or write audit records.

The 503 has its record too (II.2 traceability: every request, the refused included): status 503,
the reason, nothing disclosed, kept in the store's backlog until the store can commit it. A request
whose record the backlog could not keep is refused 503 before its handler runs (no data fetched).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import web

from gateway import rules
from gateway.context import RequestContext
from gateway.errors import GatewayError, error, operation_outcome
from gateway.proxy import FHIR_JSON
from gateway.runtime import GATEWAY, Gateway
from gateway.store.commit import StoreUnavailable

log = structlog.get_logger("emrguard.audited")


@dataclass
class Reply:
    """What a handler answers: status, a JSON body (None for none), extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[web.Request, RequestContext], Awaitable[Reply]]


@dataclass(frozen=True)
class Surface:
    """What differs between the API surfaces (FHIR, admin) in how their answers are written."""

    content_type: str
    #: The 500 for an unexpected error (a bug must not leak data or skip the audit).
    internal: GatewayError
    #: The 503 when the audit record cannot be written.
    unavailable: GatewayError
    #: The path recorded in the audit record.
    path: Callable[[web.Request], str]
    #: Called with the context before the handler runs (e.g. what kind of call this is).
    prepare: Callable[[RequestContext], None] = lambda ctx: None
    #: Called with the context and the final status before the record is written.
    finish: Callable[[RequestContext, int], None] = lambda ctx, status: None


def respond(
    status: int, body: Any, ctx: RequestContext, surface: Surface, headers: dict[str, str]
) -> web.Response:
    out = {
        **headers,
        "Content-Type": f"{surface.content_type}; charset=utf-8",
        "X-Request-Id": ctx.request_id,
        "Cache-Control": "no-store",  # patient data is never cached by intermediaries
    }
    return web.Response(status=status, body=orjson.dumps(body) if body is not None else b"", headers=out)


def _refusal(err: GatewayError, ctx: RequestContext) -> Reply:
    ctx.reasons = ctx.reasons or err.reasons
    return Reply(err.status, operation_outcome(err, ctx.request_id), dict(err.headers))


def audited(surface: Surface, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap ``handler`` so that its every outcome is audited before it is released (II.2)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY]
        ctx = RequestContext.from_request(request, surface.path(request))
        with structlog.contextvars.bound_contextvars(request_id=ctx.request_id):
            surface.prepare(ctx)
            if not gw.store.admit():  # the backlog is full: refuse before anything is fetched
                log.error("audit backlog full; request refused", backlog=len(gw.store.backlog))
                return await _withhold(gw, ctx, surface, "the audit backlog is full")
            try:
                return await _handle(gw, request, ctx, surface, handler)
            finally:
                gw.store.release()

    return handle


async def _handle(
    gw: Gateway, request: web.Request, ctx: RequestContext, surface: Surface, handler: Handler
) -> web.StreamResponse:
    """Run the handler, then commit the record before the answer is released (II.2)."""
    try:
        reply = await handler(request, ctx)
    except GatewayError as err:
        reply = _refusal(err, ctx)
    except Exception:  # a bug must not leak data or skip the audit
        log.exception("unhandled error", interaction=ctx.fhir.interaction if ctx.fhir else None)
        ctx.reasons = []
        reply = _refusal(surface.internal, ctx)
    try:  # the exact bytes to release exist before the record says they were released
        response = respond(reply.status, reply.body, ctx, surface, reply.headers)
    except Exception:
        log.exception("answer could not be serialised; nothing released")
        ctx.reasons = []
        reply = _refusal(surface.internal, ctx)
        response = respond(reply.status, reply.body, ctx, surface, reply.headers)
        ctx.patients_disclosed, ctx.resources_disclosed = set(), []
    ctx.status = reply.status
    surface.finish(ctx, reply.status)
    try:
        await gw.audit.write(ctx)
    except Exception as exc:
        # II.2: no disclosure (and no reported change) without its record. Withhold all.
        if isinstance(exc, StoreUnavailable):  # expected in an outage: the store says why, once
            log.error("audit record not committed in time; response withheld", error=str(exc))
        else:
            log.exception("audit record could not be written; response withheld")
        return await _withhold(gw, ctx, surface, str(exc) or type(exc).__name__)
    return response


async def _withhold(gw: Gateway, ctx: RequestContext, surface: Surface, why: str) -> web.Response:
    """The 503 of a request whose record was not committed, and that 503's own record, kept (II.2):
    nothing disclosed; the answer it would have had is named in the record (``withheld_status``)."""
    unavailable = surface.unavailable
    if ctx.status:  # (0: refused before its handler ran)
        ctx.audit_extra["withheld_status"] = ctx.status
    ctx.audit_extra["audit_unavailable"] = why[:500]
    ctx.status = unavailable.status
    ctx.reasons = list(unavailable.reasons)
    ctx.patients_disclosed, ctx.resources_disclosed = set(), []
    await gw.audit.keep(ctx)
    return respond(unavailable.status, operation_outcome(unavailable, ctx.request_id), ctx, surface, {})


FHIR_SURFACE = Surface(
    content_type=FHIR_JSON,
    internal=error(
        status=500,
        code="exception",
        rule=rules.INTERNAL,
        en="internal gateway error; the request was not completed",
        zh="网关内部错误,请求未完成",
    ),
    unavailable=error(
        status=503,
        code="transient",
        rule=rules.AUDIT_UNAVAILABLE,
        en="the audit record could not be written, so no data is released; try again",
        zh="审计记录写入失败,为保证可追溯不返回数据;请稍后重试",
        clause="II.2",
    ),
    path=lambda request: request.match_info.get("tail", ""),
)


#: The longest raw path an edge refusal records (the record bounds every text field again).
MAX_EDGE_PATH = 1024


def _raw_path(request: web.Request) -> str:
    """The path exactly as sent (no decoding, no normalising), without the query, bounded."""
    return request.raw_path.partition("?")[0][:MAX_EDGE_PATH]


#: What the edge refuses before any surface's handler runs: FHIR JSON (an OperationOutcome), and
#: the audit record's ``path`` is the raw path, so ``//fhir/x`` is recorded as sent.
EDGE_SURFACE = Surface(
    content_type=FHIR_JSON,
    internal=FHIR_SURFACE.internal,
    unavailable=FHIR_SURFACE.unavailable,
    path=_raw_path,
)


def refuse(err: GatewayError) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The audited answer to a request refused at the edge (gateway/app.py): ``err``, recorded (II.2)."""

    async def refused(request: web.Request, ctx: RequestContext) -> Reply:
        raise err

    return audited(EDGE_SURFACE, refused)
