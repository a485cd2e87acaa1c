"""The path of one FHIR request through the gateway, top to bottom, in eight steps.

1. authenticate  2. parse  3. context (plugins)  4. request decision  5. last word before the
upstream (plugins: write governance)  6. forward  7. response decision and filter over every
returned resource  8. plugins' last look (watermarks), and the answer.

The handler returns data or raises; gateway/audited.py turns that into the response, after the
audit record is committed (II.2). The controls of the notice live in plugins/ (gateway/hooks.py).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import web

from gateway import rules
from gateway.audited import FHIR_SURFACE, Reply, audited
from gateway.context import RequestContext
from gateway.decide import judge, request_decision
from gateway.errors import GatewayError, Reason, error
from gateway.fhir.body import read_body
from gateway.fhir.filter import apply_verdicts
from gateway.fhir.params import check_format, parse_params
from gateway.fhir.request import decided_bundle, parse_request
from gateway.fhir.resources import collect
from gateway.fhir.validate import validate_write
from gateway.paging import CURSOR_PARAM, RAW_PAGING_PARAMS, Cursor
from gateway.proxy import rewrite_url, rewrite_urls
from gateway.runtime import GATEWAY, Gateway
from gateway.store import utc_now

FHIR_PREFIX = "/fhir"


async def fhir_request(request: web.Request, ctx: RequestContext) -> Reply:
    gw = request.app[GATEWAY]
    # 1. Who is asking (II.1).
    ctx.operator = await gw.verifier.verify_headers(request.headers)
    # 2. What they ask for: JSON only, a FHIR interaction the gateway understands, a valid write;
    #    a page of an earlier search is that search again (the gateway owns paging, gateway/paging.py).
    query = list(request.query.items())
    params = parse_params(query)
    check_format(params, request.headers.get("Accept", ""))
    page = _page_of(gw, ctx, params)
    ctx.body, body, form = (b"", None, []) if page else await read_body(request, ctx.path)
    original = page or Cursor("", ctx.method, ctx.path, query + form, ctx.operator.id, None, 0)
    ctx.fhir = parse_request(original.method, original.path, original.query, body)
    if "If-None-Exist" in request.headers:  # a conditional create: the policy sees its search
        ctx.fhir.conditional = True
        ctx.fhir.if_none_exist = parse_params(
            parse_qsl(request.headers["If-None-Exist"], keep_blank_values=True)
        )
    if ctx.fhir.is_write:
        validate_write(ctx.fhir, request.content_type.lower())
    # 3. The facts the decision needs: purpose, grants, care relationship, seals (plugins).
    await gw.hooks.before_decision(ctx)
    if page:
        gw.pager.check_purpose(page, ctx.purpose)
    # 4. The request decision.
    ctx.policy_engine, ctx.policy_revision = gw.engine.name, gw.engine.revision
    ctx.request_input = ctx.decision_input(utc_now())
    decision = await request_decision(gw, ctx, ctx.request_input)
    ctx.reasons, ctx.obligations = decision.reasons, decision.obligations
    if not decision.allow:
        ctx.decision = "deny"
        withheld = Reason(rules.POLICY_DENY, "refused by policy", "策略拒绝")
        raise GatewayError(403, "forbidden", decision.reasons or [withheld])
    ctx.decision = "allow"
    # 5. The last word before the upstream sees it (a write is judged by what it changes, I.3).
    extra_headers = await gw.hooks.before_forward(ctx)
    sent = ctx.body
    if ctx.fhir.interaction in ("batch", "transaction"):  # what is sent is what was decided
        assert isinstance(body, dict)  # parse_request accepted it as a Bundle
        sent = orjson.dumps(decided_bundle(body))
    # 6. Forward exactly the parameters the policy saw (re-encoded), never the raw string.
    t0 = time.perf_counter()
    if page:  # the server's own link, exactly as it gave it
        path, _, upstream_query = page.upstream.partition("?")
        upstream = await gw.upstream.send(
            "GET", path, upstream_query, request.headers, b"", ctx.request_id, extra_headers=extra_headers
        )
    else:
        upstream = await gw.upstream.send(
            ctx.method,
            ctx.path,
            _forwarded(ctx, query),
            request.headers,
            _forwarded(ctx, form).encode() if form else sent,
            ctx.request_id,
            extra_headers=extra_headers,
        )
    ctx.upstream_ms = (time.perf_counter() - t0) * 1000
    ctx.upstream_status = upstream.status
    await gw.hooks.after_upstream(ctx, upstream)
    if upstream.body is not None and not (
        isinstance(upstream.body, dict) and isinstance(upstream.body.get("resourceType"), str)
    ):
        raise error(
            status=502,
            code="invalid",
            rule=rules.UPSTREAM_NOT_FHIR,
            en="the FHIR server's answer is not a FHIR resource",
            zh="FHIR 服务器返回的内容不是 FHIR 资源",
        )
    public_base = _public_base(gw, request)
    gw.pager.own_links(upstream.body, gw.upstream.base, public_base, _with_purpose(original, ctx.purpose))
    rewrite_urls(upstream.body, gw.upstream.base, public_base)
    headers = {k: rewrite_url(v, gw.upstream.base, public_base) for k, v in upstream.headers.items()}
    # 7. The response decision, one call for every resource that came back, then the filter.
    slots = collect(upstream.body)
    ctx.entries_returned = len(slots)
    verdicts = await judge(gw, ctx, ctx.request_input, slots)
    # Also with no resources at all: a bare total (_count=0) must not reveal a withheld count.
    result = apply_verdicts(upstream.body, slots, verdicts, gw.pseudonymiser)
    ctx.entries_dropped, ctx.entries_redacted = result.dropped, result.redacted
    if result.root_dropped:
        withheld = Reason(rules.POLICY_WITHHELD, "the resource is withheld by policy", "该资源依策略不予提供")
        raise GatewayError(403, "forbidden", result.root_reasons or [withheld])
    ctx.patients_disclosed = result.disclosed_patients
    ctx.resources_disclosed = result.disclosed
    # 8. The plugins' last look (watermarks), then the caller's answer.
    await gw.hooks.before_release(ctx, upstream.body)
    return Reply(upstream.status, upstream.body, {**headers, **ctx.response_headers})


handle_fhir = audited(FHIR_SURFACE, fhir_request)


def _page_of(gw: Gateway, ctx: RequestContext, params: dict[str, list[str]]) -> Cursor | None:
    """The search a `?_cursor=` request pages through; upstream paging parameters are refused."""
    raw = RAW_PAGING_PARAMS & params.keys()
    if CURSOR_PARAM not in params and not raw:
        return None
    if (
        raw
        or ctx.method != "GET"
        or ctx.path.strip("/")
        or len(params) != 1
        or len(params[CURSOR_PARAM]) != 1
    ):
        raise error(
            status=400,
            code="invalid",
            rule=rules.PAGING_RAW,
            en="follow the gateway's own paging links as they are (GET <base>?_cursor=…, nothing added)",
            zh="请原样使用网关提供的翻页链接(GET <base>?_cursor=…,不附加其他参数)",
            clause="I.4",
        )
    assert ctx.operator is not None
    page = gw.pager.open(params[CURSOR_PARAM][0], ctx.operator.id)
    ctx.audit_extra["page_of"] = page.original
    return page


def _with_purpose(cursor: Cursor, purpose: str | None) -> Cursor:
    return Cursor(cursor.upstream, cursor.method, cursor.path, cursor.query, cursor.operator, purpose, 0)


def _public_base(gw: Gateway, request: web.Request) -> str:
    return gw.settings.public_base_url.rstrip("/") or f"{request.scheme}://{request.host}{FHIR_PREFIX}"


#: Parameters decided on but never forwarded, and where the audit record notes them: both make the
#: server leave out what the response decision grades on (`_elements=id` strips labels and codes;
#: HAPI's `_summary=text` drops `Condition.code`, so an HIV diagnosis would be graded as harmless).
#: FHIR lets a server return more than was asked for: the gateway asks for whole resources.
NOT_FORWARDED = {"_elements": "elements_ignored", "_summary": "summary_ignored"}


def _forwarded(ctx: RequestContext, pairs: list[tuple[str, str]]) -> str:
    """Encode the parameters for the upstream, without those in :data:`NOT_FORWARDED`.

    The pairs are the ones the policy decided on; re-encoding them (rather than forwarding the raw
    string) means a `%23` or `+` cannot make the server read other parameters than the policy did.
    """
    kept = []
    for key, value in pairs:
        noted = NOT_FORWARDED.get(key.split(":")[0])
        if noted is None or (noted == "summary_ignored" and value == "false"):
            kept.append((key, value))
        else:
            ctx.audit_extra.setdefault(noted, []).append(value)
    return urlencode(kept)
