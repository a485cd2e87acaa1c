"""One audit record per request, allowed or not (II.2: every operation, its time and its operator
queryable and traceable).

The record answers "who saw what, when, why": the operator, the purpose, the patients asked for
and the patients actually disclosed, the decision with the rules that made it and the policy
revision. It is committed to the store *before* the response is released; if it cannot be, the
client gets 503 and no data (fail closed). The same record goes out as one JSON line (structlog +
orjson) to ``audit_log`` for log shipping.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from gateway.aio import stop_task
from gateway.audit_chain import load_private_key, sign_checkpoint
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


class Checkpointer:
    """Signs the audit chain's head every few seconds into a file outside the database (II.2)."""

    def __init__(self, store: Store, key_file: str, checkpoint_file: str, interval: float, log: Any) -> None:
        self.store = store
        self.key = load_private_key(key_file)
        self.path = Path(checkpoint_file)
        self.interval = interval
        self.log = log
        self.signed_seq = -1
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._loop(), name="emrguard-audit-checkpoints")

    async def close(self) -> None:
        await stop_task(self._task)
        await self.checkpoint()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.checkpoint()
            except OSError:
                self.log.error("audit_checkpoint_failed", path=str(self.path))

    async def checkpoint(self) -> dict[str, Any] | None:
        head, seq = self.store.chain_head
        if seq == 0 or seq == self.signed_seq:
            return None
        cp = sign_checkpoint(
            self.key, seq, head, datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )
        line = orjson.dumps(cp) + b"\n"
        await asyncio.to_thread(self._append, line)
        self.signed_seq = seq
        self.log.info("audit_checkpoint", **cp)
        return cp

    def _append(self, line: bytes) -> None:
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


class AuditLog:
    """Writes each record to the store (first: that is the durable copy) and to the JSON-lines log."""

    def __init__(
        self, store: Store, destination: str, checkpoints: tuple[str, str, float] | None = None
    ) -> None:
        self.store = store
        self.destination = destination
        self._file: IO[bytes] | None = None
        self._log: Any = None
        self._checkpoint_settings = checkpoints
        self.checkpointer: Checkpointer | None = None

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
        if self._checkpoint_settings:
            key_file, checkpoint_file, interval = self._checkpoint_settings
            self.checkpointer = Checkpointer(self.store, key_file, checkpoint_file, interval, self._log)
            self.checkpointer.start()

    async def close(self) -> None:
        if self.checkpointer is not None:
            await self.checkpointer.close()
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
