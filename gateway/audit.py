"""One audit record per request, allowed or not (II.2: every operation, its time and its operator
queryable and traceable).

The record answers "who saw what, when, why": the operator, the purpose, the patients asked for
and the patients actually disclosed, the decision with the rules that made it and the policy
revision. It is committed to the store *before* the response is released; if it cannot be, the
client gets 503 and no data (fail closed). The same record goes out as one JSON line (structlog +
orjson) to ``audit_log`` for log shipping.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import structlog

from gateway.context import RequestContext
from gateway.store import Store


def _text(value: str | None, limit: int = 2048) -> str | None:
    """Header- and URL-derived text as valid UTF-8 (undecodable bytes arrive as lone surrogates)."""
    if value is None:
        return None
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


def build_record(ctx: RequestContext) -> dict[str, Any]:
    fhir = ctx.fhir
    op = ctx.operator
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
        "query": _text(ctx.query_string),
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
        "max_grade_disclosed": max(
            (g for key, g in ctx.grades.items() if key in set(ctx.resources_disclosed)), default=None
        ),
        "alerts": [a.get("event") for a in ctx.alerts],
        "latency_ms": round(ctx.elapsed_ms(), 3),
        "policy_ms": round(ctx.policy_ms, 3),
        "upstream_ms": round(ctx.upstream_ms, 3),
        **({"extra": ctx.audit_extra} if ctx.audit_extra else {}),
    }


class AuditLog:
    """Writes each record to the store (first: that is the durable copy) and to the JSON-lines log."""

    def __init__(self, store: Store, destination: str) -> None:
        self.store = store
        self.destination = destination
        self._file: IO[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        if self.destination == "-":
            stream: IO[bytes] = sys.stdout.buffer
        else:
            self._file = open(self.destination, "ab", buffering=0)
            stream = self._file
        self._log = structlog.wrap_logger(
            structlog.BytesLogger(stream),
            processors=[structlog.processors.JSONRenderer(serializer=orjson.dumps)],
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def write(self, ctx: RequestContext) -> dict[str, Any]:
        record = build_record(ctx)
        for alert in ctx.alerts:  # II.3: alerts first, so no audited access lacks its alert
            event = {**alert, "time": record["time"]}
            await self.store.insert_alert(event)
            # structlog's own "event" field is the line's name ("alert"); the alert's event is alert_event.
            self._log.warning(
                "alert",
                **{("alert_event" if k == "event" else k): v for k, v in event.items() if k != "type"},
            )
        await self.store.insert_audit(record)
        self._log.info("audit", **record)
        return record
