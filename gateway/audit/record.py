"""The audit record of one request (II.2: every operation, its time and its operator queryable and
traceable): who saw what, when, why — the operator, the purpose, the patients asked for and the
patients actually disclosed, the decision with the rules that made it and the policy revision.
The fields are an interface hospitals script against (README: audit record fields): extend, never
rename.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from gateway.context import RequestContext


def _text(value: str | None, limit: int = 2048) -> str | None:
    """Header- and URL-derived text as valid UTF-8 (undecodable bytes arrive as lone surrogates)."""
    if value is None:
        return None
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


#: Query parameters that carry credentials: recorded as "[redacted]", never as sent (anyone who reads
#: the trail or the shipped log could replay them).
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "id_token",
        "refresh_token",
        "code",
        "client_secret",
        "client_assertion",
        "password",
        "token",
        "jwt",
    }
)


def redacted_query(query: str) -> str:
    """The query string with the values of credential parameters replaced."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, sep, _ = part.partition("=")
        parts.append(
            f"{name}=[redacted]" if sep and unquote(name).split(":")[0].lower() in SECRET_PARAMS else part
        )
    return "&".join(parts)


def build_record(ctx: RequestContext) -> dict[str, Any]:
    fhir = ctx.fhir
    op = ctx.operator
    disclosed = set(ctx.resources_disclosed)
    return {
        "time": datetime.fromtimestamp(ctx.started_wall, UTC).isoformat(timespec="milliseconds"),
        "request_id": ctx.request_id,
        "operator": op.id if op else None,
        "operator_name": op.name if op else None,
        "roles": list(op.roles) if op else [],
        "dept": op.dept if op else None,
        "org": op.org if op else None,
        "purpose": ctx.purpose,
        "client_address": ctx.client_address,
        "user_agent": _text(ctx.user_agent),
        "method": ctx.method,
        "path": _text(ctx.path),
        "query": _text(redacted_query(ctx.query_string)),
        "interaction": fhir.interaction if fhir else None,
        "resource_type": fhir.resource_type if fhir else None,
        "resource_id": fhir.id if fhir else None,
        "operation": fhir.operation if fhir else None,
        "entries_requested": len(fhir.entries) if fhir else 0,
        "patients_targeted": fhir.all_patients() if fhir else [],
        "patients_disclosed": sorted(ctx.patients_disclosed),
        "resources_disclosed": ctx.resources_disclosed,
        "decision": ctx.decision,
        "reasons": [r.as_dict() for r in ctx.reasons],
        "obligations": ctx.obligations,
        "policy_engine": ctx.policy_engine,
        "policy_revision": ctx.policy_revision,
        "upstream_status": ctx.upstream_status,
        "status": ctx.status,
        "entries_returned": ctx.entries_returned,
        "entries_dropped": ctx.entries_dropped,
        "entries_redacted": ctx.entries_redacted,
        "grades": ctx.grades,
        "max_grade_disclosed": max((g for key, g in ctx.grades.items() if key in disclosed), default=None),
        "alerts": [a.get("event") for a in ctx.alerts],
        "latency_ms": round(ctx.elapsed_ms(), 3),
        "policy_ms": round(ctx.policy_ms, 3),
        "upstream_ms": round(ctx.upstream_ms, 3),
        **({"extra": ctx.audit_extra} if ctx.audit_extra else {}),
    }
