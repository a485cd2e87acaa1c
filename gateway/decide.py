"""Asking the policy on a request's behalf: timed, fail closed, alerts kept for the audit record.

The pipeline and the controls (plugins/write_guard judges a write's pre-read and its result) ask
through these functions, so every decision of a request is timed into its ``policy_ms``, an engine
failure is always a refusal, and every alert obligation is committed with the request's record.
Answers come from the decision cache (gateway/policy/cache.py) where the policy would give them
again exactly; a cached answer's alerts are raised for every request it answers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
import structlog

from gateway import rules
from gateway.context import RequestContext
from gateway.errors import GatewayError, Reason, error
from gateway.fhir.about import about_references, local_about_references
from gateway.fhir.resources import UNRESOLVED_PATIENT, Slot
from gateway.policy import PolicyError, RequestDecision, ResponseDecision, Verdict
from gateway.policy.cache import (
    DecisionCache,
    entry_asked,
    entry_key,
    request_key,
    response_key,
    whole_asked,
)
from gateway.policy.engine import REQUEST_DECISION, RESPONSE_DECISION
from gateway.proxy import batch_get
from gateway.runtime import Gateway

log = structlog.get_logger("emrguard.decide")
T = TypeVar("T")


async def request_decision(
    gw: Gateway, ctx: RequestContext, decision_input: dict[str, Any]
) -> RequestDecision:
    """The request decision for this input; its alerts are kept for the audit record (II.3)."""
    decision = await _ask(ctx, _request(gw, decision_input))
    raise_alerts(ctx, decision.obligations)
    return decision


def decision_cache(gw: Gateway) -> DecisionCache:
    """The engine's decision cache, made on first use with ``decision_cache_size`` answers."""
    cache = gw.engine.cache
    if cache is None:
        cache = gw.engine.cache = DecisionCache(gw.settings.decision_cache_size)
    return cache


async def _request(gw: Gateway, doc: dict[str, Any]) -> RequestDecision:
    engine = gw.engine
    cache = decision_cache(gw)
    asked = request_key(engine.revision, doc) if cache.admits(engine) else None
    if asked is None:
        return await engine.decide_request(doc)
    held = cache.get(asked, "request")
    cache.answer("request", cached=held is not None)
    if held is not None:  # fresh objects every time: nobody shares a cached answer's lists
        return engine.request_decision(orjson.loads(held.value))
    raw = await engine.evaluate(REQUEST_DECISION, doc)
    decision = engine.request_decision(raw)  # a malformed answer raises here, and is not kept
    if "valid_until" in raw:  # a policy that does not say until when is never reused
        cache.put(asked, orjson.dumps(raw), decision.valid_until, "request")
    else:
        cache.not_kept("request")
    return decision


async def judge(
    gw: Gateway, ctx: RequestContext, decision_input: dict[str, Any], slots: list[Slot]
) -> list[Verdict]:
    """The response decision: one call for all these resources, with the facts about their patients.

    A resource that describes others (a Provenance's target, a List's items: about.ABOUT_ELEMENTS)
    is judged with what it describes: their patients are its patients, and if one of them is withheld
    from the operator, so is it. Records it is about that are not in the response are read upstream
    and judged in the same call (never released).
    """
    if not slots:
        return []
    targets, depends = await _about(gw, ctx, slots)
    judged = slots + targets
    entries = [slot.summary() for slot in judged]
    new_patients = {p for e in entries for p in e["patients"]} - ctx.patient_context.keys()
    await gw.hooks.before_response_decision(ctx, new_patients)
    distinct, index, keys = _distinct(entries)
    decision = await _ask(ctx, _response(gw, dict(decision_input, entries=distinct), keys))
    raise_alerts(ctx, decision.obligations)
    verdicts = [decision.verdicts[i] for i in index]
    for i, needed in depends.items():
        if verdicts[i]["keep"] and any(not verdicts[j]["keep"] for j in needed):
            verdicts[i] = {"keep": False, "reasons": [ABOUT_WITHHELD.as_dict()]}
    verdicts = verdicts[: len(slots)]
    for entry, verdict in zip(entries[: len(slots)], verdicts, strict=True):
        grade = verdict.get("grade")
        if isinstance(grade, int):
            ctx.grades[f"{entry['type']}/{entry['id']}"] = grade
    return verdicts


ABOUT_WITHHELD = Reason(
    "about.withheld",
    "this record is about another record that is withheld from you",
    "该记录涉及您无权查看的其他记录",
    "I.4",
)
#: How many described records one response may make the gateway read; beyond, fail closed.
MAX_ABOUT = 100


async def _about(
    gw: Gateway, ctx: RequestContext, slots: list[Slot]
) -> tuple[list[Slot], dict[int, list[int]]]:
    """The records the response's describing resources are about, and which slot needs which."""
    wanted = {i: about_references(s.resource) for i, s in enumerate(slots)}
    wanted = {i: refs for i, refs in wanted.items() if refs}
    local = _local_targets(slots)
    if not wanted:
        return [], local
    here = {
        f"{s.resource.get('resourceType')}/{s.resource.get('id')}": i
        for i, s in enumerate(slots)
        if s.kind in ("root", "entry") and isinstance(s.resource.get("id"), str)
    }
    missing = list(dict.fromkeys(r for refs in wanted.values() for r in refs if r not in here))
    fetched = await _read_upstream(gw, ctx, missing[:MAX_ABOUT])
    targets: list[Slot] = []
    for ref, resource in fetched.items():
        here[ref] = len(slots) + len(targets)
        targets.append(Slot(resource, "about", f"about[{len(targets)}]"))
    judged = slots + targets
    depends: dict[int, list[int]] = {}
    for i, refs in wanted.items():
        needed = [here[r] for r in refs if r in here]
        depends[i] = needed
        for j in needed:
            if j != i:
                slots[i].about |= judged[j].patients()
        if any(r in missing[MAX_ABOUT:] for r in refs):
            slots[i].about.add(UNRESOLVED_PATIENT)  # too many to read: who it is about is unknown
    for i, needed in local.items():
        depends[i] = depends.get(i, []) + needed
    return targets, depends


def _local_targets(slots: list[Slot]) -> dict[int, list[int]]:
    """Which slots a describing resource needs that are in this very answer (`#id`, `urn:`)."""
    out: dict[int, list[int]] = {}
    for i, slot in enumerate(slots):
        refs = local_about_references(slot.resource)
        if not refs:
            continue
        needed = []
        for ref in refs:
            for j, other in enumerate(slots):
                if j == i:
                    continue
                if ref.startswith("#") and other.kind == "contained" and other.parent is slot.resource:
                    hit = other.resource.get("id") == ref[1:]
                else:
                    hit = (
                        other.bundle is not None
                        and other.bundle is slot.bundle
                        and (other.entry or {}).get("fullUrl") == ref
                    )
                if hit:
                    needed.append(j)
        if needed:
            out[i] = needed
    return out


async def _read_upstream(gw: Gateway, ctx: RequestContext, refs: list[str]) -> dict[str, dict[str, Any]]:
    """These records as the server has them now (absent: nothing to disclose), in one batch."""
    if not refs:
        return {}
    answers = await batch_get(gw.upstream, refs, ctx.request_id)
    if answers is None:
        raise _about_unreadable()
    found: dict[str, dict[str, Any]] = {}
    for ref, answer in zip(refs, answers, strict=True):
        status = str(((answer or {}).get("response") or {}).get("status", ""))
        resource = (answer or {}).get("resource")
        if status.startswith("200") and isinstance(resource, dict):
            found[ref] = resource
        elif not status.startswith(("404", "410")):
            raise _about_unreadable()
    return found


def _about_unreadable() -> GatewayError:
    return error(
        status=502,
        code="transient",
        rule=rules.ABOUT_UNREADABLE,
        en="the records this answer is about could not be read, so it cannot be judged; nothing was disclosed",
        zh="无法读取该结果所涉及的记录,无法判断能否提供;未返回任何数据",
        clause="I.4",
    )


def distinct_entries(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """Entries equal in all but `id` and `path` are judged once (opa_policies/README.md: a rule must
    not decide on id or path). A 100-entry search of one patient's heart rates is one entry to the
    policy, not a hundred. Returns the distinct entries and, per entry, its distinct index."""
    distinct, index, _ = _distinct(entries)
    return distinct, index


def _distinct(
    entries: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[int], list[bytes]]:
    """As :func:`distinct_entries`, and the canonical bytes of each distinct entry (its cache key)."""
    seen: dict[bytes, int] = {}
    distinct: list[dict[str, Any]] = []
    keys: list[bytes] = []
    index: list[int] = []
    for e in entries:
        key = entry_key(e)
        if key not in seen:
            seen[key] = len(distinct)
            distinct.append(e)
            keys.append(key)
        index.append(seen[key])
    return distinct, index, keys


async def _response(gw: Gateway, doc: dict[str, Any], keys: list[bytes]) -> ResponseDecision:
    """The response decision over distinct entries: each verdict from the cache where it holds,
    the others decided in one call (gateway/policy/cache.py says why this is exact)."""
    engine = gw.engine
    cache = decision_cache(gw)
    shared = response_key(engine.revision, doc) if keys and cache.admits(engine) else None
    if shared is None:
        return await engine.decide_response(doc)
    asked = [entry_asked(shared, k) for k in keys]
    held = [cache.get(a, "response_entry") for a in asked]
    kept = [h for h in held if h is not None]
    if len(kept) == len(keys):  # every verdict held; none of them raises an alert
        cache.answer("response", cached=True)
        verdicts = [orjson.loads(h.value) for h in kept]
        return engine.response_decision({"verdicts": verdicts, "obligations": []}, len(keys))
    whole = whole_asked(shared, keys)
    found = cache.get(whole, "response_whole")
    cache.answer("response", cached=found is not None)
    if found is not None:
        return engine.response_decision(orjson.loads(found.value), len(keys))
    missing = [i for i, h in enumerate(held) if h is None]
    entries = doc["entries"]
    raw = await engine.evaluate(RESPONSE_DECISION, dict(doc, entries=[entries[i] for i in missing]))
    part = engine.response_decision(raw, len(missing))  # a malformed answer raises: nothing kept
    verdicts = [None if h is None else orjson.loads(h.value) for h in held]
    for i, verdict in zip(missing, part.verdicts, strict=True):
        verdicts[i] = verdict
    decision = ResponseDecision(verdicts, part.obligations, part.valid_until)
    if "valid_until" not in raw:  # a policy that does not say until when is never reused
        cache.not_kept("response_entry")
    elif not part.obligations:
        # No alert for these entries together, so none for any of them alone: each kept alone.
        for i, verdict in zip(missing, part.verdicts, strict=True):
            cache.put(asked[i], orjson.dumps(verdict), part.valid_until, "response_entry")
    else:
        # Which entry raised which alert is not said: the whole answer is kept, for as long as its
        # parts hold (the held verdicts raise none, so these alerts are the whole answer's).
        value = orjson.dumps({"verdicts": verdicts, "obligations": part.obligations})
        ends = [h.until_ns for h in kept if h.until_ns is not None]
        cache.not_kept("response_entry")
        cache.put(whole, value, part.valid_until, "response_whole", not_after=min(ends, default=None))
    return decision


def raise_alerts(ctx: RequestContext, obligations: list[dict[str, Any]]) -> None:
    """Alert obligations (II.3) are committed with the audit record of this request, one per event:
    the request and the response decision (and a write's second decision) may each ask for the same
    break-glass or seal-access alert, and management must not count it twice. An alert of an event
    already raised is merged into it (its patients joined), never raised again."""
    for o in obligations:
        if o.get("type") != "alert":
            continue
        same = next((a for a in ctx.alerts if a.get("event") == o.get("event")), None)
        if same is not None:
            same["patients"] = sorted(set(same.get("patients") or []) | set(o.get("patients") or []))
            continue
        ctx.alerts.append(
            {**o, "request_id": ctx.request_id, "operator": ctx.operator.id if ctx.operator else None}
        )


async def _ask(ctx: RequestContext, call: Awaitable[T]) -> T:
    """Time a policy call; no decision is a refusal (fail closed), audited as a deny."""
    t0 = time.perf_counter()
    try:
        return await call
    except PolicyError as exc:
        raise _policy_failure(ctx, exc) from None
    finally:
        ctx.policy_ms += (time.perf_counter() - t0) * 1000


def _policy_failure(ctx: RequestContext, exc: PolicyError) -> GatewayError:
    log.error("policy engine failure", error=str(exc))
    ctx.decision = "deny"
    err = error(
        status=503,
        code="transient",
        rule=rules.POLICY_UNAVAILABLE,
        en=f"no policy decision could be made ({exc}); nothing was disclosed",
        zh="无法获得访问控制决策,未返回任何数据;请联系信息科",
        clause="I.4",
    )
    ctx.reasons = err.reasons
    return err
