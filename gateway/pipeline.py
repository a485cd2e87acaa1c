"""The path of one FHIR request through the gateway, top to bottom.

authenticate -> parse -> plugins add context -> request decision -> forward -> response decision
over every returned resource -> filter -> plugins' last look -> audit (committed) -> release.
Any failure on the way ends in an OperationOutcome, and is audited too; if the audit record cannot
be written, nothing but a 503 leaves (fail closed).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import jsonpatch
import jsonpointer
import orjson
import structlog
from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import GatewayError, Reason, error, operation_outcome
from gateway.fhir.filter import apply_verdicts
from gateway.fhir.request import FhirRequest, check_format, parse_params, parse_request
from gateway.fhir.resources import Slot, collect, resource_patients
from gateway.fhir.validate import validate_write
from gateway.policy import PolicyError
from gateway.proxy import FHIR_JSON, rewrite_url, rewrite_urls
from gateway.runtime import Gateway
from gateway.store import utc_now

log = structlog.get_logger("emrguard.pipeline")
T = TypeVar("T")
GATEWAY = web.AppKey("gateway", Gateway)
FHIR_PREFIX = "/fhir"
JSON_BODY_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json")
FORM_TYPE = "application/x-www-form-urlencoded"


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
    if ctx.path.rstrip("/").endswith("_search"):
        # Search parameters in any other body would reach the server unseen by the policy.
        if content_type != FORM_TYPE:
            raise error(
                415,
                "not-supported",
                "fhir.media-type",
                f"POST _search takes {FORM_TYPE}, not '{content_type}'",
                f"POST _search 只接受 {FORM_TYPE} 格式,不接受“{content_type}”",
            )
        try:
            return raw, None, parse_qsl(raw.decode("utf-8", errors="strict"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise error(
                400, "invalid", "fhir.bad-form", "the search form is not UTF-8", "查询表单不是 UTF-8 编码"
            ) from None
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
        ctx.audit_extra["client_request_id"] = (
            request.headers["X-Request-Id"][:128].encode("utf-8", "replace").decode()
        )
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
    if "If-None-Exist" in request.headers:  # a conditional create: the policy sees its search
        ctx.fhir.conditional = True
        ctx.fhir.if_none_exist = parse_params(
            parse_qsl(request.headers["If-None-Exist"], keep_blank_values=True)
        )
    if ctx.fhir.is_write:
        validate_write(ctx.fhir, request.content_type.lower())
        ctx.audit_extra["body_hash"] = _sha256(raw_body)
    # 3. Context the decision needs (purpose, and later grants and seals).
    for plugin in gw.plugins:
        await plugin.before_decision(ctx)
    # 4. The request decision.
    ctx.policy_engine, ctx.policy_revision = gw.engine.name, gw.engine.revision
    now = utc_now()
    decision_input = ctx.decision_input(now)
    decision = await _ask_policy(ctx, gw.engine.decide_request(decision_input))
    ctx.reasons, ctx.obligations = decision.reasons, decision.obligations
    _raise_alerts(ctx, decision.obligations)
    if not decision.allow:
        ctx.decision = "deny"
        raise GatewayError(
            403, "forbidden", decision.reasons or [Reason("policy.deny", "refused by policy", "策略拒绝")]
        )
    ctx.decision = "allow"
    # 5. A write may only change what the operator may see as it is now (I.3, I.4).
    if_match = await _check_current_versions(gw, ctx, decision_input)
    # 6. Forward exactly the parameters the policy saw (re-encoded), never the raw string.
    if form:
        raw_body = _without_elements(ctx, form).encode()
    t0 = time.perf_counter()
    upstream = await gw.upstream.send(
        ctx.method,
        ctx.path,
        _without_elements(ctx, query),
        request.headers,
        raw_body,
        ctx.request_id,
        extra_headers=if_match,
    )
    ctx.upstream_ms = (time.perf_counter() - t0) * 1000
    ctx.upstream_status = upstream.status
    if ctx.fhir.is_write:
        _record_version_after(ctx, upstream)
    if upstream.body is not None and not (
        isinstance(upstream.body, dict) and isinstance(upstream.body.get("resourceType"), str)
    ):
        raise error(
            502,
            "invalid",
            "upstream.not-fhir",
            "the FHIR server's answer is not a FHIR resource",
            "FHIR 服务器返回的内容不是 FHIR 资源",
        )
    public_base = _public_base(gw, request)
    rewrite_urls(upstream.body, gw.upstream.base, public_base)
    headers = {k: rewrite_url(v, gw.upstream.base, public_base) for k, v in upstream.headers.items()}
    # 7. The response decision, one call for every resource that came back, then the filter.
    slots = collect(upstream.body)
    ctx.entries_returned = len(slots)
    verdicts = await _judge(gw, ctx, decision_input, slots)
    # Also with no resources at all: a bare total (_count=0) must not reveal a withheld count.
    result = apply_verdicts(upstream.body, slots, verdicts, gw.pseudonymiser)
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
    # 8. Plugins' last look (watermarks come here), then the caller's answer.
    for plugin in gw.plugins:
        await plugin.before_release(ctx, upstream.body)
    return _json_response(upstream.status, upstream.body, ctx, {**headers, **ctx.response_headers})


SENSITIVITY_SYSTEMS = frozenset(
    {
        "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
        "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    }
)


def _labels(resource: Any) -> set[str]:
    meta = resource.get("meta") if isinstance(resource, dict) else None
    return {
        str(c.get("code"))
        for c in (meta or {}).get("security") or []
        if isinstance(c, dict) and c.get("system") in SENSITIVITY_SYSTEMS
    }


def _write_result(target: FhirRequest, current: dict[str, Any]) -> Any:
    """What a write leaves behind: the patched current version, or the new body of an update."""
    if target.interaction != "patch":
        return target.body
    try:
        return jsonpatch.apply_patch(current, target.body)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError) as exc:
        raise error(
            422, "processing", "fhir.patch-failed", f"the patch cannot be applied: {exc}", "补丁无法应用"
        ) from None


async def _decide_effect(
    gw: Gateway, ctx: RequestContext, writes: list[tuple[FhirRequest, dict[str, Any]]]
) -> None:
    """A write is judged by what it produces, not only by its URL (security review).

    A JSON Patch can re-point `subject` (or `copy` `focus` into it) and move a record into another
    patient's chart; an update (also inside a batch or transaction) can drop the labels that restrict
    it. Each write's result is worked out against the version just read; the patients of the results
    join the targets and the request is decided again, with the labels the writes would remove (only
    records officers may lower a record's sensitivity, I.3).
    """
    assert ctx.fhir is not None
    added: set[str] = set()
    removed: set[str] = set()
    for target, current in writes:
        result = _write_result(target, current)
        new = resource_patients(result) - set(target.all_patients())
        target.patients |= new
        added |= new
        removed |= _labels(current) - _labels(result)
    if not added and not removed:
        return
    ctx.audit_extra["write_effect"] = {"patients_added": sorted(added), "labels_removed": sorted(removed)}
    for plugin in gw.plugins:  # facts about the patients the writes now reach
        await plugin.before_decision(ctx)
    again = ctx.decision_input(utc_now())
    again["target"]["labels_removed"] = sorted(removed)
    decision = await _ask_policy(ctx, gw.engine.decide_request(again))
    _raise_alerts(ctx, decision.obligations)
    if not decision.allow:
        ctx.decision, ctx.reasons = "deny", decision.reasons
        raise GatewayError(403, "forbidden", decision.reasons)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _record_version_after(ctx: RequestContext, upstream: Any) -> None:
    """Who changed what (I.3, II.2): the version a write produced, beside the version it replaced."""
    after: list[str | None] = []
    body = upstream.body if isinstance(upstream.body, dict) else {}
    if body.get("resourceType") == "Bundle" and body.get("type") in (
        "batch-response",
        "transaction-response",
    ):
        for entry in body.get("entry") or []:
            etag = ((entry or {}).get("response") or {}).get("etag")
            after.append(etag.removeprefix("W/").strip('"') if isinstance(etag, str) else None)
    else:
        version = (body.get("meta") or {}).get("versionId") if body else None
        etag = upstream.headers.get("ETag")
        after.append(version or (etag.removeprefix("W/").strip('"') if etag else None))
    ctx.audit_extra["versions_after"] = after


def _without_elements(ctx: RequestContext, pairs: list[tuple[str, str]]) -> str:
    """Encode the parameters for the upstream, without `_elements`.

    The pairs are the ones the policy decided on; re-encoding them (rather than forwarding the raw
    string) means a `%23` or `+` cannot make the server read other parameters than the policy did.
    `_elements=id` would strip the security labels and codes the response decision reads; FHIR lets
    a server return more than the elements asked for, so the gateway asks for whole resources.
    """
    kept = [(k, v) for k, v in pairs if k.split(":")[0] != "_elements"]
    if len(kept) != len(pairs):
        ctx.audit_extra["elements_ignored"] = [v for k, v in pairs if k.split(":")[0] == "_elements"]
    return urlencode(kept)


async def _check_current_versions(
    gw: Gateway, ctx: RequestContext, decision_input: dict[str, Any]
) -> dict[str, str]:
    """Before an update, patch or delete by id, judge the record as it is now, as if it were read.

    Otherwise a write could change a record the operator may not see (e.g. patch away its
    very-restricted label and read it back). The version seen is pinned with If-Match so the
    record cannot change between this check and the write. Returns headers for the forwarded write.
    """
    assert ctx.fhir is not None
    targets = [
        r for r in [ctx.fhir, *ctx.fhir.entries] if r.interaction in ("update", "patch", "delete") and r.id
    ]
    if not targets:
        return {}
    currents: list[tuple[Any, str | None]] = []
    writes: list[tuple[FhirRequest, dict[str, Any]]] = []
    for target in targets:
        resp = await gw.upstream.send(
            "GET", f"{target.resource_type}/{target.id}", "", None, b"", ctx.request_id
        )
        if resp.status in (404, 410):
            continue  # nothing there yet (update-as-create) or already gone
        if resp.status != 200 or not isinstance(resp.body, dict):
            raise error(
                502,
                "transient",
                "upstream.pre-read",
                "the current version of the record could not be read",
                "无法读取记录的当前版本",
            )
        currents.append((resp.body, resp.headers.get("ETag")))
        if target.interaction in ("patch", "update"):
            writes.append((target, resp.body))
    slots = [slot for body, _ in currents for slot in collect(body)]
    if slots:
        verdicts = await _judge(gw, ctx, decision_input, slots)
        if not all(v["keep"] for v in verdicts):
            refused = [
                Reason.from_policy(r) for v in verdicts if not v["keep"] for r in v.get("reasons") or []
            ]
            withheld = Reason(
                "policy.withheld", "the record is withheld by policy", "该记录依策略不予提供", "I.4"
            )
            raise GatewayError(403, "forbidden", refused or [withheld])
    if writes:
        await _decide_effect(gw, ctx, writes)
    top = ctx.fhir
    versions = [((body.get("meta") or {}).get("versionId"), etag) for body, etag in currents]
    ctx.audit_extra["versions_before"] = [v for v, _ in versions]
    # Hashes of what was there, so "who changed what" is answerable from the audit alone (I.3, II.2).
    ctx.audit_extra["body_hashes_before"] = [
        _sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)) for body, _ in currents
    ]
    if (
        top in targets
        and currents
        and "If-Match" not in ctx.headers
        and top.interaction in ("update", "patch", "delete")
    ):
        version, etag = versions[0]
        if etag or version:
            return {"If-Match": etag or f'W/"{version}"'}
    return {}


async def _judge(
    gw: Gateway, ctx: RequestContext, decision_input: dict[str, Any], slots: list[Slot]
) -> list[dict[str, Any]]:
    """The response decision: one call for all these resources, with the facts about their patients."""
    if not slots:
        return []
    entries = [slot.summary() for slot in slots]
    new_patients = {p for e in entries for p in e["patients"]} - ctx.patient_context.keys()
    for plugin in gw.plugins:
        await plugin.before_response_decision(ctx, new_patients)
    distinct, index = distinct_entries(entries)
    decision = await _ask_policy(ctx, gw.engine.decide_response(dict(decision_input, entries=distinct)))
    _raise_alerts(ctx, decision.obligations)
    verdicts = [decision.verdicts[i] for i in index]
    for entry, verdict in zip(entries, verdicts, strict=True):
        if isinstance(verdict.get("grade"), int):
            ctx.grades[f"{entry['type']}/{entry['id']}"] = verdict["grade"]
    return verdicts


def distinct_entries(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Entries equal in all but `id` and `path` are judged once (opa_policies/README.md: a rule must
    not decide on id or path). A 100-entry search of one patient's heart rates is one entry to the
    policy, not a hundred. Returns the distinct entries and, per entry, its distinct index."""
    seen: dict[bytes, int] = {}
    distinct: list[dict[str, Any]] = []
    index: list[int] = []
    for e in entries:
        key = orjson.dumps(
            {k: v for k, v in e.items() if k not in ("id", "path")}, option=orjson.OPT_SORT_KEYS
        )
        if key not in seen:
            seen[key] = len(distinct)
            distinct.append(e)
        index.append(seen[key])
    return distinct, index


def _raise_alerts(ctx: RequestContext, obligations: list[dict[str, Any]]) -> None:
    """Alert obligations (II.3) are committed with the audit record of this request."""
    for o in obligations:
        if o.get("type") == "alert":
            ctx.alerts.append(
                {**o, "request_id": ctx.request_id, "operator": ctx.operator.id if ctx.operator else None}
            )


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
