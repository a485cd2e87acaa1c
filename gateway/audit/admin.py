"""``/admin/audit``: who saw what, when, why (II.2 可查询) — search and read the trail. Mounted by
the core (the trail is the core's); every search is itself audited, the patient searched for as a
target. The BALP forms of the same records are plugins/balp/admin.py.
"""

from __future__ import annotations

from aiohttp import web

from gateway import rules
from gateway.admin import Call, FieldError, patient_field, target_patient
from gateway.audit.search import AuditQuery, TimeError
from gateway.audited import Reply
from gateway.config import Settings
from gateway.context import RequestContext
from gateway.errors import error
from gateway.hooks import AdminRoute
from gateway.runtime import Gateway


def audit_query(request: web.Request) -> AuditQuery:
    """The search parameters of an audit search or export, or a FieldError naming the bad one."""
    try:
        return AuditQuery.from_mapping(request.query)
    except TimeError as exc:
        raise FieldError(
            exc.key,
            f"'{exc.key}' must be a time such as 2026-12-01T08:00:00Z or 2026-12-01T16:00:00+08:00",
            f"“{exc.key}”必须是时间,例如 2026-12-01T08:00:00Z 或 2026-12-01T16:00:00+08:00",
            "II.2",
        ) from None
    except ValueError:
        raise FieldError(
            "cursor", "'limit' and 'cursor' must be whole numbers", "“limit”和“cursor”必须是整数", "II.2"
        ) from None


async def search_audit(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    """GET /admin/audit?patient=&operator=&from=&to=&purpose=&decision=&resource_type=&resource_id=&request_id=&cursor=&limit=

    Who saw what, when, why (II.2 可查询); newest first; follow next_cursor for the next page.
    The search itself is audited, with the patient searched for as a target.
    """
    query = audit_query(request)
    if query.patient:
        target_patient(ctx, call, patient_field(query.patient, clause="II.2"))
    return Reply(200, await gw.store.search_audit(query))


async def read_audit_record(request: web.Request, ctx: RequestContext, gw: Gateway, call: Call) -> Reply:
    record = await gw.store.audit_record(request.match_info["request_id"])
    if record is None:
        raise error(
            status=404,
            code="not-found",
            rule=rules.AUDIT_NOT_FOUND,
            en="no audit record with that request id",
            zh="没有该请求编号的审计记录",
            clause="II.2",
        )
    return Reply(200, record)


def audit_roles(settings: Settings) -> tuple[str, ...]:
    return settings.admin_audit_roles


ROUTES = [
    AdminRoute("GET", "/audit", "admin.audit.search", "II.2", audit_roles, search_audit),
    AdminRoute("GET", "/audit/{request_id}", "admin.audit.read", "II.2", audit_roles, read_audit_record),
]
