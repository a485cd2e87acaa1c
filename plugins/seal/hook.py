"""Record sealing 封存 (I.4): during a public-controversy event a patient's records are closed to
everyone but named personnel.

Puts each involved patient's seal state into the policy input (``patients[p].sealed`` and
``.seal``), for the patients a request targets and for those first seen in its response. Seal
state is read from the store on every request, never cached: the seal takes effect the moment
the seal call returns. Sealing and unsealing happen through the admin API (admin.py beside this module).
"""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from gateway.hooks import AdminRoute, Plugin
from gateway.runtime import Gateway
from plugins.seal.admin import ROUTES
from plugins.seal.store import SCHEMA, SealStore

SEAL_FIELDS = ("id", "authorised", "case_ref", "reason", "sealed_at", "sealed_by")


class SealPlugin(Plugin):
    name = "seal"
    schema = SCHEMA

    def __init__(self) -> None:
        self.seals: SealStore | None = None

    async def start(self, gw: Gateway) -> None:
        self.seals = SealStore(gw.store)

    def admin_routes(self) -> list[AdminRoute]:
        return ROUTES

    async def _mark(self, ctx: RequestContext, patients: set[str] | list[str]) -> None:
        assert self.seals is not None, "seal plugin used before start()"
        if not patients:
            return
        seals = await self.seals.active_seals(sorted(patients))
        for patient in patients:
            seal = seals.get(patient)
            facts = ctx.patient_context.setdefault(patient, {})
            facts["sealed"] = seal is not None
            facts["seal"] = {k: seal.get(k) for k in SEAL_FIELDS} if seal else None
            sealed = ctx.audit_extra.setdefault("sealed_patients", [])
            if seal and patient not in sealed:  # idempotent: the hooks may run again (gateway/hooks.py)
                sealed.append(patient)
        if not ctx.audit_extra.get("sealed_patients"):
            ctx.audit_extra.pop("sealed_patients", None)

    async def before_decision(self, ctx: RequestContext) -> None:
        if ctx.fhir is not None:
            await self._mark(ctx, ctx.fhir.all_patients())

    async def before_response_decision(self, ctx: RequestContext, patients: set[str]) -> None:
        await self._mark(ctx, patients)

    async def explain_facts(
        self, ctx: RequestContext, patients: set[str], given: dict[str, dict[str, Any]]
    ) -> None:
        await self._mark(ctx, patients)


PLUGIN = SealPlugin
