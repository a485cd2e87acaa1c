"""IHE BALP (II.2, III): the audit trail as FHIR AuditEvents — read one, export pages, and forward
every record to a hospital's AuditEvent repository (``audit_forward_url``) through the outbox."""

from __future__ import annotations

from gateway.hooks import AdminRoute, Plugin
from gateway.runtime import Gateway
from plugins.balp.admin import ROUTES
from plugins.balp.forward import AuditForwarder


class BalpPlugin(Plugin):
    name = "balp"

    def __init__(self) -> None:
        self.forwarder: AuditForwarder | None = None

    async def start(self, gw: Gateway) -> None:
        if gw.settings.audit_forward_url:
            self.forwarder = AuditForwarder(
                gw.store, gw.settings.audit_forward_url, gw.settings.audit_forward_authorization
            )
            await self.forwarder.start()

    async def close(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.close()
            self.forwarder = None

    def admin_routes(self) -> list[AdminRoute]:
        return ROUTES


PLUGIN = BalpPlugin
