"""Record sealing 封存 (I.4): during a public-controversy event a patient's records are closed to
everyone but named personnel.

Puts each involved patient's seal state into the policy input (``patients[p].sealed`` and
``.seal``), for the patients a request targets and for those first seen in its response. Seal
state is read from the store on every request, never cached: the seal takes effect the moment
the seal call returns. Sealing and unsealing happen through the admin API (gateway/admin.py).
"""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from gateway.plugin import Plugin

SEAL_FIELDS = ("id", "authorised", "case_ref", "reason", "sealed_at", "sealed_by")


class SealPlugin(Plugin):
    name = "seal"

    async def start(self, app_state: Any) -> None:
        self.store = app_state.store

    async def _mark(self, ctx: RequestContext, patients: set[str] | list[str]) -> None:
        if not patients:
            return
        seals = await self.store.active_seals(sorted(patients))
        for patient in patients:
            seal = seals.get(patient)
            facts = ctx.patient_context.setdefault(patient, {})
            facts["sealed"] = seal is not None
            facts["seal"] = {k: seal.get(k) for k in SEAL_FIELDS} if seal else None
            if seal:
                ctx.audit_extra.setdefault("sealed_patients", []).append(patient)

    async def before_decision(self, ctx: RequestContext) -> None:
        if ctx.fhir is not None:
            await self._mark(ctx, ctx.fhir.all_patients())

    async def before_response_decision(self, ctx: RequestContext, patients: set[str]) -> None:
        await self._mark(ctx, patients)


PLUGIN = SealPlugin
