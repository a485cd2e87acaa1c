"""Asking the policy on a request's behalf: timed, fail closed, alerts kept for the audit record.

The pipeline and the controls (plugins/write_guard judges a write's pre-read and its result) ask
through these functions, so every decision of a request is timed into its ``policy_ms``, an engine
failure is always a refusal, and every alert obligation is committed with the request's record.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
import structlog

from gateway import rules
from gateway.context import RequestContext
from gateway.errors import GatewayError, error
from gateway.fhir.resources import Slot
from gateway.policy import PolicyError, RequestDecision, Verdict
from gateway.runtime import Gateway

log = structlog.get_logger("emrguard.decide")
T = TypeVar("T")


async def request_decision(
    gw: Gateway, ctx: RequestContext, decision_input: dict[str, Any]
) -> RequestDecision:
    """The request decision for this input; its alerts are kept for the audit record (II.3)."""
    decision = await _ask(ctx, gw.engine.decide_request(decision_input))
    raise_alerts(ctx, decision.obligations)
    return decision


async def judge(
    gw: Gateway, ctx: RequestContext, decision_input: dict[str, Any], slots: list[Slot]
) -> list[Verdict]:
    """The response decision: one call for all these resources, with the facts about their patients."""
    if not slots:
        return []
    entries = [slot.summary() for slot in slots]
    new_patients = {p for e in entries for p in e["patients"]} - ctx.patient_context.keys()
    await gw.hooks.before_response_decision(ctx, new_patients)
    distinct, index = distinct_entries(entries)
    decision = await _ask(ctx, gw.engine.decide_response(dict(decision_input, entries=distinct)))
    raise_alerts(ctx, decision.obligations)
    verdicts = [decision.verdicts[i] for i in index]
    for entry, verdict in zip(entries, verdicts, strict=True):
        grade = verdict.get("grade")
        if isinstance(grade, int):
            ctx.grades[f"{entry['type']}/{entry['id']}"] = grade
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


def raise_alerts(ctx: RequestContext, obligations: list[dict[str, Any]]) -> None:
    """Alert obligations (II.3) are committed with the audit record of this request."""
    for o in obligations:
        if o.get("type") == "alert":
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
