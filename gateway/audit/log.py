"""The audit trail's writer: each request's record is committed to the store *before* the response
is released (the durable copy; if it cannot be, the client gets 503 and no data — gateway/audited.py),
then goes out as one JSON line (structlog + orjson) to ``audit_log`` for log shipping.
"""

from __future__ import annotations

import sys
from typing import IO, Any, BinaryIO, cast

import orjson
import structlog

from gateway.audit.checkpoints import Checkpointer
from gateway.audit.record import build_record
from gateway.context import RequestContext
from gateway.store import Store


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
        self.closed = False

    async def start(self) -> None:
        if self.destination == "-":
            stream: IO[bytes] = sys.stdout.buffer
        else:
            self._file = open(self.destination, "ab", buffering=0)
            stream = self._file
        self._log = structlog.wrap_logger(
            structlog.BytesLogger(cast(BinaryIO, stream)),
            processors=[structlog.processors.JSONRenderer(serializer=orjson.dumps)],
        )
        if self._checkpoint_settings:
            key_file, checkpoint_file, interval = self._checkpoint_settings
            self.checkpointer = Checkpointer(self.store, key_file, checkpoint_file, interval, self._log)
            self.checkpointer.start()

    async def close(self) -> None:
        self.closed = True  # nothing is recorded after the final checkpoint: a late request gets 503
        if self.checkpointer is not None:
            await self.checkpointer.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    async def write(self, ctx: RequestContext) -> dict[str, Any]:
        if self.closed:
            raise RuntimeError("the audit trail is closed (shutting down)")
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
