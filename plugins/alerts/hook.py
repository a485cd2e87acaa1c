"""The alerts control (II.3): its admin endpoint; the alerts themselves ride the audit commit."""

from __future__ import annotations

from gateway.hooks import AdminRoute, Plugin
from plugins.alerts.admin import ROUTES


class AlertsPlugin(Plugin):
    name = "alerts"

    def admin_routes(self) -> list[AdminRoute]:
        return ROUTES


PLUGIN = AlertsPlugin
