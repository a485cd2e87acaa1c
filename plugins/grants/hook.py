"""Time-bound grants (II.1): trainee rotations, vendor agreements, export permissions.

Puts the operator's grants from the store into the policy input (``subject.grants``) on every
request. The policy checks each grant's time window against ``input.time`` to the second, so a
rotation that ended one second ago no longer opens anything; nothing is cached here.
"""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from gateway.hooks import AdminRoute, Plugin
from gateway.runtime import Gateway
from plugins.grants.admin import ROUTES
from plugins.grants.store import SCHEMA, GrantStore

GRANT_FIELDS = (
    "id",
    "kind",
    "operator",
    "dept",
    "purposes",
    "start",
    "end",
    "scope",
    "agreement",
    "supervisor",
)


class GrantsPlugin(Plugin):
    name = "grants"
    schema = SCHEMA

    def __init__(self) -> None:
        self.grants: GrantStore | None = None

    async def start(self, gw: Gateway) -> None:
        self.grants = GrantStore(gw.store)

    def admin_routes(self) -> list[AdminRoute]:
        return ROUTES

    async def before_decision(self, ctx: RequestContext) -> None:
        await self._load(ctx)
        if ctx.grants:
            ctx.audit_extra["grants"] = [g["id"] for g in ctx.grants]

    async def explain_facts(
        self, ctx: RequestContext, patients: set[str], given: dict[str, dict[str, Any]]
    ) -> None:
        await self._load(ctx)

    async def _load(self, ctx: RequestContext) -> None:
        assert self.grants is not None, "grants plugin used before start()"
        if ctx.operator is None:
            return
        grants = await self.grants.grants_for(ctx.operator.id)
        ctx.grants = [{k: g.get(k) for k in GRANT_FIELDS} for g in grants]


PLUGIN = GrantsPlugin
