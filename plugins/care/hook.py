"""The care relationship's facts (I.4 "按照岗位职责"): which departments treat a patient, who is on the
patient's care team, and the patient's flags (VIP, staff-patient) that raise the grade of their records.

Looked up from the upstream FHIR server — the EMR is the source of truth for Encounters and
CareTeams — in one batch request for all patients not yet known, and reused for
``patient_context_ttl_seconds``. The policy decides with them (opa_policies/emr/care). If the
lookup fails the request fails closed: no facts, no decision, no data.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any

from gateway.context import RequestContext
from gateway.errors import error
from gateway.fhir.resources import UNRESOLVED_PATIENT
from gateway.hooks import Plugin
from gateway.proxy import UpstreamClient, batch_get
from gateway.runtime import Gateway

#: The rule id this control refuses with (OperationOutcome, audit record).
LOOKUP_FAILED = "care.lookup-failed"

# Department codes on Encounter.serviceType / Encounter.type / CareTeam.category.
DEPARTMENT_SYSTEM = "https://emrguard.example/fhir/CodeSystem/department"
# Patient.meta.tag / meta.security codes that raise the grade of everything about the patient.
FLAG_SYSTEM = "https://emrguard.example/fhir/CodeSystem/patient-flag"
FLAGS = frozenset({"VIP", "staff"})
FACT_KEYS = ("departments", "care_team", "flags")
OPERATOR_SYSTEM = "https://emrguard.example/fhir/sid/operator"


def _codes(concepts: Any, system: str) -> set[str]:
    out: set[str] = set()
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        if isinstance(concept, dict):
            for coding in concept.get("coding") or []:
                if (
                    isinstance(coding, dict)
                    and coding.get("system") == system
                    and isinstance(coding.get("code"), str)
                ):
                    out.add(coding["code"])
    return out


def _entries(bundle: Any) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict):
        return []
    return [
        e["resource"]
        for e in bundle.get("entry") or []
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


# An Encounter that never happened, or a CareTeam no longer caring, makes no relationship.
VOID_ENCOUNTER = frozenset({"cancelled", "entered-in-error"})
ACTIVE_CARE_TEAM = frozenset({"active", "proposed"})


def _ended(period: Any, now_iso: str) -> bool:
    end = period.get("end") if isinstance(period, dict) else None
    return isinstance(end, str) and end[:19] < now_iso[:19]


def facts_from(encounters: Any, care_teams: Any, patient: Any, now_iso: str = "") -> dict[str, Any]:
    now_iso = now_iso or datetime.now(UTC).isoformat()
    departments: set[str] = set()
    for enc in _entries(encounters):
        if enc.get("status") in VOID_ENCOUNTER:
            continue
        departments |= _codes(enc.get("serviceType"), DEPARTMENT_SYSTEM) | _codes(
            enc.get("type"), DEPARTMENT_SYSTEM
        )
    team: set[str] = set()
    for ct in _entries(care_teams):
        if ct.get("status", "active") not in ACTIVE_CARE_TEAM or _ended(ct.get("period"), now_iso):
            continue
        departments |= _codes(ct.get("category"), DEPARTMENT_SYSTEM)
        for participant in ct.get("participant") or []:
            member = participant.get("member") if isinstance(participant, dict) else None
            if not isinstance(member, dict):
                continue
            ident = member.get("identifier")
            if (
                isinstance(ident, dict)
                and ident.get("system") == OPERATOR_SYSTEM
                and isinstance(ident.get("value"), str)
            ):
                team.add(ident["value"])
            ref = member.get("reference")
            if isinstance(ref, str) and ref.startswith("Practitioner/"):
                team.add(ref.split("/", 1)[1])
    flags: set[str] = set()
    if isinstance(patient, dict):
        meta = patient.get("meta") or {}
        for label in (meta.get("tag") or []) + (meta.get("security") or []):
            if isinstance(label, dict) and label.get("system") == FLAG_SYSTEM and label.get("code") in FLAGS:
                flags.add(label["code"])
    return {"departments": sorted(departments), "care_team": sorted(team), "flags": sorted(flags)}


class CarePlugin(Plugin):
    name = "care"

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.upstream: UpstreamClient | None = None
        self.ttl = 30.0

    async def start(self, gw: Gateway) -> None:
        self.upstream = gw.upstream
        self.ttl = gw.settings.patient_context_ttl_seconds

    async def _load(self, ctx: RequestContext, patients: set[str] | list[str]) -> None:
        now = time.monotonic()
        missing: list[str] = []
        waiting: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        for p in patients:
            if p == UNRESOLVED_PATIENT:  # named by identifier only: no facts, so no relationship
                ctx.patient_context.setdefault(p, {}).update(
                    {"departments": [], "care_team": [], "flags": []}
                )
                continue
            hit = self._cache.get(p)
            if hit and hit[0] > now:
                ctx.patient_context.setdefault(p, {}).update(hit[1])
            elif p in self._inflight:  # single flight: another request is looking this patient up
                waiting.append((p, self._inflight[p]))
            else:
                missing.append(p)
        found = await self._lookup(sorted(missing), ctx.request_id, now) if missing else {}
        for p, future in waiting:
            found[p] = await asyncio.shield(future)  # (the looker-up's failure is this request's too)
        for p, facts in found.items():
            ctx.patient_context.setdefault(p, {}).update(facts)

    async def _lookup(self, missing: list[str], request_id: str, now: float) -> dict[str, dict[str, Any]]:
        """One batch read upstream for the patients nobody is looking up yet; requests that need
        them meanwhile wait for this answer instead of asking again (single flight)."""
        loop = asyncio.get_running_loop()
        futures = {p: loop.create_future() for p in missing}
        self._inflight.update(futures)
        try:
            assert self.upstream is not None, "care plugin used before start()"
            urls = [
                url
                for p in missing
                for url in (f"Encounter?subject={p}&_count=200", f"CareTeam?subject={p}&_count=50", p)
            ]
            answers = await batch_get(self.upstream, urls, request_id)
            if answers is None:
                raise error(
                    status=502,
                    code="transient",
                    rule=LOOKUP_FAILED,
                    en="the patients' departments could not be looked up, so no access decision can be made",
                    zh="无法查询患者所属科室,无法做出访问决策",
                    clause="I.4",
                )
            for i, p in enumerate(missing):
                enc, ct, pat = (
                    a.get("resource") if isinstance(a, dict) else None for a in answers[3 * i : 3 * i + 3]
                )
                facts = facts_from(enc, ct, pat)
                # Jittered expiry: entries looked up together do not all expire in the same instant
                # (every in-flight request then missed at once, issue 9).
                self._cache[p] = (now + self.ttl * random.uniform(0.8, 1.0), facts)
                futures[p].set_result(facts)
        except BaseException as exc:
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved here too: no "never retrieved" warning without waiters
            raise
        finally:
            for p in missing:
                self._inflight.pop(p, None)
        if len(self._cache) > 10_000:  # bounded: drop the expired
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        return {p: f.result() for p, f in futures.items()}

    async def before_decision(self, ctx: RequestContext) -> None:
        if ctx.fhir is not None:
            await self._load(ctx, ctx.fhir.all_patients())

    async def before_response_decision(self, ctx: RequestContext, patients: set[str]) -> None:
        await self._load(ctx, patients)

    async def explain_facts(
        self, ctx: RequestContext, patients: set[str], given: dict[str, dict[str, Any]]
    ) -> None:
        """Explain never asks the EMR: the facts are the ones the explain body gives."""
        for p in patients:
            facts = given.get(p) or {}
            ctx.patient_context.setdefault(p, {}).update({k: list(facts.get(k) or []) for k in FACT_KEYS})


PLUGIN = CarePlugin
