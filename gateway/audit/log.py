"""The audit trail's writer. The store is the system of record: each request's record is committed
there *before* the response is released (if it cannot be, the client gets 503 and no data —
gateway/audited.py). The JSON-lines log (``audit_log``, for log shipping) follows the store: a line
exists only for a committed record, is written whole (one write, or truncated back), and a log that
cannot be written (a full volume) costs no request its answer — the log lags, and catches up from
the store, in order, at the next write or start-up. A torn last line left by a crash is cut at start.
A response is never changed once its record is committed: nothing after the commit can fail it.

A store that cannot commit in time (gateway/store/commit.py) answers the request 503; its 503
record is kept (:meth:`AuditLog.keep`) and committed when the store can, and the log follows those
commits too (II.2).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import IO, Any

import orjson
import structlog

from gateway.aio import stop_task
from gateway.audit.checkpoints import Checkpointer
from gateway.audit.record import build_record
from gateway.context import RequestContext
from gateway.store import Store

log = structlog.get_logger("emrguard.audit")
#: Records read from the store per catch-up step.
CATCH_UP_BATCH = 500


class LogSink:
    """JSON lines after the store: one whole line per committed record, in the store's order."""

    def __init__(self, store: Store, destination: str) -> None:
        self.store = store
        self.destination = destination
        self._file: IO[bytes] | None = None
        #: seq of the newest record whose line is in the log.
        self.cursor = 0
        #: lines that could not be written (the log lags the store until it catches up).
        self.failures = 0
        self.lagging = False
        # A catch-up after kept records were committed runs beside requests' follow(): one at a time.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self.destination == "-":
            self.cursor = self.store.chain_head[1]
            return
        self._file = open(self.destination, "a+b", buffering=0)
        last = self._repair()
        head = self.store.chain_head[1]
        # A new log starts at the store's head; an existing one resumes after its last record
        # (records committed while it could not be written, or just before a crash, follow now).
        self.cursor = head
        if last is not None:
            rows = await self.store.read("SELECT seq FROM audit WHERE request_id = ?", (last,))
            if rows and int(rows[0][0]) < head:
                self.cursor = int(rows[0][0])
                await self.catch_up(head)

    def _repair(self) -> str | None:
        """Cut a torn last line (a crash mid-write); the request id of the last audit line."""
        assert self._file is not None
        fh = self._file
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return None
        fh.seek(max(0, size - 65536))
        tail = fh.read()
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            keep = size - len(tail) + cut + 1 if cut >= 0 else 0
            os.ftruncate(fh.fileno(), keep)
            log.warning("audit_log_torn_line_removed", path=self.destination, bytes=size - keep)
            tail = tail[: cut + 1] if cut >= 0 else b""
        for line in reversed(tail.splitlines()):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if (
                isinstance(doc, dict)
                and doc.get("event") == "audit"
                and isinstance(doc.get("request_id"), str)
            ):
                return str(doc["request_id"])
        return None

    def line(self, name: str, fields: dict[str, Any]) -> bool:
        """Write one JSON line whole; False (nothing left behind) if it cannot be."""
        data = orjson.dumps({**fields, "event": name}) + b"\n"
        if self._file is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return True
        start = self._file.seek(0, os.SEEK_END)
        try:
            written = self._file.write(data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            try:
                os.ftruncate(self._file.fileno(), start)  # no partial line for the next to join
            except OSError:
                pass
            self.failures += 1
            log.error("audit_log_write_failed", path=self.destination, error=str(exc))
            return False
        return True

    async def follow(self, seq: int, record: dict[str, Any], alerts: list[dict[str, Any]]) -> None:
        """The lines of a record just committed (catching up first if the log lags)."""
        async with self._lock:
            await self._follow(seq, record, alerts)

    async def _follow(self, seq: int, record: dict[str, Any], alerts: list[dict[str, Any]]) -> None:
        if seq <= self.cursor:
            return  # a catch-up wrote it already
        if self.lagging or seq != self.cursor + 1:
            await self._catch_up(seq - 1)
        if self.lagging:
            self.lagging = seq > self.cursor + 1 or not self._record_lines(seq, record, alerts)
            return
        if not self._record_lines(seq, record, alerts):
            self.lagging = True

    def _record_lines(self, seq: int, record: dict[str, Any], alerts: list[dict[str, Any]]) -> bool:
        for alert in alerts:
            # structlog's "event" field is the line's name ("alert"); the alert's event is alert_event.
            fields = {("alert_event" if k == "event" else k): v for k, v in alert.items() if k != "type"}
            if not self.line("alert", fields):
                return False
        if not self.line("audit", record):
            return False
        self.cursor = seq
        return True

    async def catch_up(self, until: int) -> None:
        """Lines for committed records the log lacks, in order, up to ``until``."""
        async with self._lock:
            await self._catch_up(until)

    async def _catch_up(self, until: int) -> None:
        while self.cursor < until:
            batch = await self.store.records_after(self.cursor, CATCH_UP_BATCH)
            if not batch:
                return
            for seq, record in batch:
                if seq > until:
                    return
                if not self.line("audit", record):
                    return
                self.cursor = seq
        self.lagging = False

    # The checkpointer's interface (gateway/audit/checkpoints.py): its lines go into the log too.
    def info(self, name: str, **fields: Any) -> None:
        self.line(name, fields)

    def error(self, name: str, **fields: Any) -> None:
        log.error(name, **fields)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class AuditLog:
    """Commits each request's record (and its alerts) to the store; the log follows (LogSink)."""

    def __init__(
        self, store: Store, destination: str, checkpoints: tuple[str, str, float] | None = None
    ) -> None:
        self.store = store
        self.sink = LogSink(store, destination)
        self._checkpoint_settings = checkpoints
        self.checkpointer: Checkpointer | None = None
        self.closed = False
        self._catching_up: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sink.start()
        self.store.on_kept_commit.append(self._follow_kept)
        if self._checkpoint_settings:
            key_file, checkpoint_file, interval = self._checkpoint_settings
            self.checkpointer = Checkpointer(self.store, key_file, checkpoint_file, interval, self.sink)
            self.checkpointer.start()

    async def close(self) -> None:
        self.closed = True  # nothing is recorded after the final checkpoint: a late request gets 503
        if self._follow_kept in self.store.on_kept_commit:
            self.store.on_kept_commit.remove(self._follow_kept)
        await stop_task(self._catching_up)
        if self.checkpointer is not None:
            await self.checkpointer.close()
        await self._sink_catch_up()
        self.sink.close()

    def _follow_kept(self) -> None:
        """Records committed with nobody waiting (kept while the store could not commit): their
        lines follow now, not only at the next request."""
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.create_task(self._sink_catch_up(), name="emrguard-audit-log-catch-up")

    async def _sink_catch_up(self) -> None:
        try:
            await self.sink.catch_up(self.store.chain_head[1])
        except Exception:  # the log lags; the store holds the records (II.2)
            self.sink.lagging = True
            log.exception("audit_log_catch_up_failed", path=self.sink.destination)

    async def write(self, ctx: RequestContext) -> dict[str, Any]:
        """Commit the request's alerts and record (II.2, II.3); raise if the record is not committed
        (by the store: in time) — the caller then withholds the answer and keeps its 503 (:meth:`keep`)."""
        if self.closed:
            raise RuntimeError("the audit trail is closed (shutting down)")
        record = build_record(ctx)
        alerts = [{**alert, "time": record["time"]} for alert in ctx.alerts]
        for alert in alerts:  # II.3: queued ahead of the record, so no audited access lacks its alert
            await self.store.insert_alert(alert, wait=False)
        seq = await self.store.insert_audit(record)
        # Committed: the answer no longer depends on the log (a full log volume lags, not refuses).
        try:
            await self.sink.follow(seq, record, alerts)
        except Exception:
            self.sink.lagging = True
            log.exception("audit_log_follow_failed", path=self.sink.destination, seq=seq)
        return record

    async def keep(self, ctx: RequestContext) -> None:
        """The record of a request answered 503 because its own could not be committed (II.2): kept
        in the store's backlog (and spill file) and committed when the store can; never raises."""
        if self.closed:  # nothing may follow the final checkpoint
            self.store.lost(ctx.request_id, "the audit trail is closed (shutting down)")
            return
        try:
            record = build_record(ctx)
        except Exception as exc:
            self.store.lost(ctx.request_id, f"the record could not be built: {exc}")
            return
        await self.store.keep_audit(record)
