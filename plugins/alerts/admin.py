"""``/admin/alerts``: anomalous or unauthorised access, newest first, for senior management (II.3).

Alerts are raised by policy obligations and committed with the audit record of the request that
raised them (gateway/audit/log.py), in the core's ``alerts`` table.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import Call, FieldError
from gateway.audited import Reply
from gateway.context import RequestContext
from gateway.hooks import AdminRoute
from gateway.runtime import Gateway

MAX_ALERTS = 1000


async def list_alerts(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """GET /admin/alerts?limit=: anomalous or unauthorised access, newest first (II.3)."""
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ALERTS:
        raise FieldError(
            "limit",
            f"'limit' must be a whole number from 1 to {MAX_ALERTS}",
            f"“limit”必须是 1 到 {MAX_ALERTS} 的整数",
            "II.3",
        )
    return Reply(200, {"alerts": await gw.store.list_alerts(int(raw))})


def _roles(settings: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(settings.admin_seal_roles + settings.admin_grant_roles))


ROUTES = [AdminRoute("GET", "/alerts", "admin.alerts.list", "II.3", _roles, list_alerts)]
