"""The audit trail as FHIR AuditEvents after IHE BALP (II.2, III): one record, or a paged export."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import Call
from gateway.audit.admin import audit_query, audit_roles, read_audit_record
from gateway.audited import Reply
from gateway.context import RequestContext
from gateway.hooks import AdminRoute
from gateway.runtime import Gateway
from plugins.balp.event import to_audit_event


async def read_audit_event(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """The record as a FHIR AuditEvent after IHE BALP (event.py beside this module)."""
    record = (await read_audit_record(request, ctx, gw, call)).body
    return Reply(200, to_audit_event(record))


async def export_audit(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """GET /admin/audit/export?from=&to=&cursor=: one page of AuditEvents (BALP) as a FHIR Bundle.

    Paged like the search (a ``next`` link carries the cursor), so a bulk export never holds the whole
    trail in memory; ``emrguard audit search --balp --all`` writes NDJSON from the store directly.
    """
    query = audit_query(request)
    page = await gw.store.search_audit(query)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": to_audit_event(r)} for r in page["records"]],
    }
    if page["next_cursor"] is not None:
        nxt = request.rel_url.update_query({"cursor": str(page["next_cursor"])})
        bundle["link"] = [{"relation": "next", "url": str(nxt)}]
    return Reply(200, bundle)


ROUTES = [
    AdminRoute("GET", "/audit/export", "admin.audit.export", "II.2", audit_roles, export_audit),
    AdminRoute(
        "GET", "/audit/{request_id}/AuditEvent", "admin.audit.balp", "II.2", audit_roles, read_audit_event
    ),
]
