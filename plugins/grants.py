"""Time-bound grants (II.1): trainee rotations, vendor agreements, export permissions.

Puts the operator's grants from the store into the policy input (``subject.grants``) on every
request. The policy checks each grant's time window against ``input.time`` to the second, so a
rotation that ended one second ago no longer opens anything; nothing is cached here.
"""

from __future__ import annotations

from typing import Any

from gateway.context import RequestContext
from gateway.plugin import Plugin

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

    async def start(self, app_state: Any) -> None:
        self.store = app_state.store

    async def before_decision(self, ctx: RequestContext) -> None:
        if ctx.operator is None:
            return
        grants = await self.store.grants_for(ctx.operator.id)
        ctx.grants = [{k: g.get(k) for k in GRANT_FIELDS} for g in grants]
        if ctx.grants:
            ctx.audit_extra["grants"] = [g["id"] for g in ctx.grants]


PLUGIN = GrantsPlugin
