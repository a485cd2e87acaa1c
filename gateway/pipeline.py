"""The path of one FHIR request through the gateway, top to bottom, in eight steps.

1. authenticate  2. parse  3. context (plugins)  4. request decision  5. last word before the
upstream (plugins: write governance)  6. forward  7. response decision and filter over every
returned resource  8. plugins' last look (watermarks), and the answer.

The handler returns data or raises; gateway/audited.py turns that into the response, after the
audit record is committed (II.2). The controls of the notice live in plugins/ (gateway/hooks.py).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import orjson
from aiohttp import web

from gateway import rules
from gateway.audited import FHIR_SURFACE, Reply, audited
from gateway.context import RequestContext
from gateway.decide import judge, request_decision
from gateway.errors import GatewayError, Reason, error, shown
from gateway.fhir.body import read_body
from gateway.fhir.filter import apply_verdicts
from gateway.fhir.outcomes import INSTANCE_READS, not_available, screen_upstream_outcome
from gateway.fhir.params import check_format, parse_params
from gateway.fhir.pseudonyms import request_pseudonyms, unmask, unmask_entries
from gateway.fhir.request import decided_bundle, parse_request
from gateway.fhir.resources import collect
from gateway.fhir.subset import apply_subset
from gateway.fhir.validate import validate_write
from gateway.pages import (
    COUNTED_INTERACTIONS,
    COUNTED_OPERATIONS,
    DEFAULT_PAGE_SIZE,
    PAGED_INTERACTIONS,
    Position,
    assemble,
    is_page,
    page_size,
    upstream_count,
)
from gateway.paging import CURSOR_PARAM, RAW_PAGING_PARAMS, Cursor, strip_paging_links
from gateway.proxy import UpstreamResponse, rewrite_url, rewrite_urls
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
    # Research answers are pseudonymised per study (gateway/fhir/pseudonyms.py): the ids a researcher
    # names by pseudonym are mapped back here, so that the facts, the decision, the upstream and the
    # audit see real ids; every id named is marked for the policy (a real one is refused, I.4).
    pseudonyms = await request_pseudonyms(gw.pseudonymiser, gw.plugins, ctx)
    real = unmask(original.method, original.path, original.query, pseudonyms)
    entries = unmask_entries(body, pseudonyms) if not original.path.strip("/") else []
    if real.seen and page:
        ctx.audit_extra["page_of"] = f"{real.path}?{urlencode(real.query)}" if real.query else real.path
    elif real.seen:
        ctx.path, query, form = real.path, real.query[: len(query)], real.query[len(query) :]
        ctx.query_string = urlencode(query)
    ctx.fhir = parse_request(original.method, real.path, real.query, body)
    ctx.fhir.ids = real.ids
    for sub, named in zip(ctx.fhir.entries, entries, strict=False):
        sub.ids = named.ids
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
        raise GatewayError(403, "forbidden", shown(decision.reasons) or [withheld])
    ctx.decision = "allow"
    # 5. The last word before the upstream sees it (a write is judged by what it changes, I.3).
    extra_headers = await gw.hooks.before_forward(ctx)
    sent = ctx.body
    if ctx.fhir.interaction in ("batch", "transaction"):  # what is sent is what was decided
        assert isinstance(body, dict)  # parse_request accepted it as a Bundle
        sent = orjson.dumps(decided_bundle(body))
    # 6. Forward exactly the parameters the policy saw (re-encoded), never the raw string; a page
    #    of a search is built by the gateway from as many upstream pages as it takes (gateway/pages.py).
    target = page_size(ctx.fhir.params)
    # `_count=0` asks for a bare total: no entries to fill a page with (the filter judges the total).
    paged = ctx.fhir.interaction in PAGED_INTERACTIONS and ctx.method in ("GET", "POST") and target != 0
    count = (
        upstream_count(target or DEFAULT_PAGE_SIZE)
        if paged
        and (ctx.fhir.interaction in COUNTED_INTERACTIONS or ctx.fhir.operation in COUNTED_OPERATIONS)
        else None
    )
    t0 = time.perf_counter()
    if page:  # the server's own link, exactly as it gave it
        start = Position(page.upstream, page.skip)
        upstream = await _fetch(gw, ctx, request, page.upstream, extra_headers)
    else:
        fwd_query = _forwarded(ctx, query, None if form else count)
        fwd_form = _forwarded(ctx, form, count) if form else ""
        start = Position(_upstream_self(ctx.path, "&".join(q for q in (fwd_query, fwd_form) if q)))
        upstream = await gw.upstream.send(
            ctx.method,
            ctx.path,
            fwd_query,
            request.headers,
            fwd_form.encode() if form else sent,
            ctx.request_id,
            extra_headers=extra_headers,
        )
    ctx.upstream_ms = (time.perf_counter() - t0) * 1000
    ctx.upstream_status = upstream.status
    await gw.hooks.after_upstream(ctx, upstream)
    _check_fhir(upstream.body)
    instance_read = ctx.fhir.interaction in INSTANCE_READS
    if instance_read and upstream.status in (404, 410):  # "not there" looks like "not yours" (I.4)
        ctx.audit_extra["upstream_says"] = upstream.status
        raise not_available()
    withheld_texts = screen_upstream_outcome(upstream.body, _said(request, ctx), upstream.status)
    if withheld_texts:
        ctx.audit_extra["upstream_outcome_withheld"] = withheld_texts
    public_base = _public_base(gw, request)
    headers = {k: rewrite_url(v, gw.upstream.base, public_base) for k, v in upstream.headers.items()}
    pseudonymiser = pseudonyms  # this request's study, or None: no pseudonyms (step 2)
    if pseudonymiser is not None:  # ETag, Location, Content-Location name real ids and versions
        answered = (ctx.fhir.resource_type, ctx.fhir.id) if ctx.fhir.resource_type and ctx.fhir.id else None
        headers = pseudonymiser.mask_headers(headers, answered)
    # 7. The response decision, one call for every resource that came back, then the filter.
    if paged and upstream.status == 200 and is_page(upstream.body):

        async def more(link: str) -> dict[str, Any]:
            t1 = time.perf_counter()
            answer = await _fetch(gw, ctx, request, link, extra_headers)
            ctx.upstream_ms += (time.perf_counter() - t1) * 1000
            if answer.status != 200 or not is_page(answer.body):
                raise _not_fhir()
            return answer.body

        assembled = await assemble(
            upstream.body,
            start,
            target if target is not None else DEFAULT_PAGE_SIZE,
            gw.settings.paging_lookahead_pages,
            upstream_base=gw.upstream.base,
            fetch=more,
            prepare=lambda body: rewrite_urls(body, gw.upstream.base, public_base),
            judge=lambda slots: judge(gw, ctx, ctx.request_input, slots),
            pseudonymiser=pseudonymiser,
        )
        original = _with_purpose(original, ctx.purpose)
        own = f"{public_base}?{request.query_string}" if page else _self_url(public_base, request)
        links: list[dict[str, str]] = [{"relation": "self", "url": own}]
        if assembled.next is not None:
            nxt = assembled.next
            links.append(
                {"relation": "next", "url": gw.pager.link(original, nxt.upstream, nxt.skip, public_base)}
            )
        upstream.body["link"] = links
        ctx.entries_returned, ctx.entries_dropped = assembled.returned, assembled.dropped
        ctx.entries_redacted = assembled.redacted
        ctx.patients_disclosed = assembled.disclosed_patients
        ctx.resources_disclosed = assembled.disclosed
        ctx.audit_extra["upstream_pages"] = assembled.upstream_reads
        if assembled.gave_up:
            ctx.audit_extra["paging_gave_up"] = True
        if instance_read and assembled.dropped and not assembled.disclosed:
            raise not_available()  # a record's history, every version withheld: as if not there
    else:
        strip_paging_links(upstream.body)
        rewrite_urls(upstream.body, gw.upstream.base, public_base)
        stored = ctx.fhir.interaction in ("read", "vread") and upstream.status == 200
        slots = collect(upstream.body, stored)
        ctx.entries_returned = len(slots)
        verdicts = await judge(gw, ctx, ctx.request_input, slots)
        # Also with no resources at all: a bare total (_count=0) must not reveal a withheld count.
        result = apply_verdicts(upstream.body, slots, verdicts, pseudonymiser)
        ctx.entries_dropped, ctx.entries_redacted = result.dropped, result.redacted
        if result.root_dropped:
            withheld = Reason(
                rules.POLICY_WITHHELD, "the resource is withheld by policy", "该资源依策略不予提供"
            )
            if instance_read:  # the reasons go to the audit record; the client sees "not available"
                ctx.reasons = result.root_reasons or [withheld]
                raise not_available()
            raise GatewayError(403, "forbidden", result.root_reasons or [withheld])
        ctx.patients_disclosed = result.disclosed_patients
        ctx.resources_disclosed = result.disclosed
    # `_summary`/`_elements` only now: the decision saw whole resources (gateway/fhir/subset.py).
    subset = apply_subset(upstream.body, ctx.fhir.params)
    if subset:
        ctx.audit_extra["subset"] = subset
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


async def _fetch(
    gw: Gateway, ctx: RequestContext, request: web.Request, link: str, extra_headers: dict[str, str]
) -> UpstreamResponse:
    """GET an upstream page by its link (relative to the upstream base), exactly as the server gave it."""
    path, _, upstream_query = link.partition("?")
    return await gw.upstream.send(
        "GET", path, upstream_query, request.headers, b"", ctx.request_id, extra_headers=extra_headers
    )


def _upstream_self(path: str, forwarded: str) -> str:
    """The first page as a GET link (a `POST Type/_search` is the same search as `GET Type?…`)."""
    path = path.removesuffix("_search").rstrip("/")
    return f"{path}?{forwarded}" if forwarded else path


def _self_url(public_base: str, request: web.Request) -> str:
    rel = request.path[len(FHIR_PREFIX) :].lstrip("/") if request.path.startswith(FHIR_PREFIX) else ""
    return f"{public_base}/{rel}" + (f"?{request.query_string}" if request.query_string else "")


def _not_fhir() -> GatewayError:
    return error(
        status=502,
        code="invalid",
        rule=rules.UPSTREAM_NOT_FHIR,
        en="the FHIR server's answer is not a FHIR resource",
        zh="FHIR 服务器返回的内容不是 FHIR 资源",
    )


def _said(request: web.Request, ctx: RequestContext) -> str:
    """Everything the requester said: what an upstream message may repeat back to them."""
    return f"{unquote(request.path_qs)} {ctx.body.decode('utf-8', 'replace')}"


def _check_fhir(body: Any) -> None:
    if body is not None and not (isinstance(body, dict) and isinstance(body.get("resourceType"), str)):
        raise _not_fhir()


def _public_base(gw: Gateway, request: web.Request) -> str:
    return gw.settings.public_base_url.rstrip("/") or f"{request.scheme}://{request.host}{FHIR_PREFIX}"


#: Parameters decided on but never forwarded, and where the audit record notes them: both make the
#: server leave out what the response decision grades on (`_elements=id` strips labels and codes;
#: HAPI's `_summary=text` drops `Condition.code`, so an HIV diagnosis would be graded as harmless).
#: FHIR lets a server return more than was asked for: the gateway asks for whole resources.
NOT_FORWARDED = {"_elements": "elements_ignored", "_summary": "summary_ignored"}


def _forwarded(ctx: RequestContext, pairs: list[tuple[str, str]], count: int | None = None) -> str:
    """Encode the parameters for the upstream, without those in :data:`NOT_FORWARDED`.

    The pairs are the ones the policy decided on; re-encoding them (rather than forwarding the raw
    string) means a `%23` or `+` cannot make the server read other parameters than the policy did.
    """
    kept = []
    if count is not None:  # the gateway's page size upstream (gateway/pages.py), once
        pairs = [(k, v) for k, v in pairs if k != "_count"] + [("_count", str(count))]
    for key, value in pairs:
        noted = NOT_FORWARDED.get(key.split(":")[0])
        if noted is None or (noted == "summary_ignored" and value == "false"):
            kept.append((key, value))
        else:
            ctx.audit_extra.setdefault(noted, []).append(value)
    return urlencode(kept)
