"""The gateway's database: SQLite on one dedicated thread (PostgreSQL comes with shared-state
deployments).

All SQLite work runs on one thread (sqlite3 connections are not for sharing), so the event loop
never waits on disk. Audit records are group-committed: every record that arrives while the
previous commit is on disk goes into the next transaction, so many concurrent requests share one
commit (WAL, synchronous=FULL: a committed record survives power loss), and each request still
waits for its own record to be committed before its response is released (II.2). Alerts (II.3)
ride the same group commit.

Controls keep their own tables (``Plugin.schema``) and reach them through :meth:`Store.read` and
:meth:`Store.write`, each a statement or a transaction on the store thread; rows come back as
``sqlite3.Row``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.aio import stop_task
from gateway.audit import search as audit_search
from gateway.audit.chain import GENESIS, canonical, chain_hash
from gateway.audit.search import AuditQuery
from gateway.store.schema import SCHEMA

MAX_BATCH = 512

ALERT_KEYS = frozenset({"type", "time", "request_id", "event", "severity", "operator", "patients", "detail"})


class StoreClosed(RuntimeError):
    pass


class StoreError(Exception):
    """A state change the store refuses; the message says why (gateway/admin.py answers it)."""


class StoreNotFound(StoreError):
    """No such grant, or no active seal (-> 404)."""


class StoreConflict(StoreError):
    """The change contradicts the current state: already sealed, already revoked (-> 409)."""


class StoreInvalid(StoreError, ValueError):
    """The data breaks a rule the tables enforce (admin routes validate first: a bug -> 400)."""


def utc_now() -> str:
    """Now, RFC 3339 UTC with milliseconds and "Z" (the format of the policy input's `time`)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    def __init__(self, path: str, schemas: tuple[str, ...] | list[str] = ()) -> None:
        self.path = path
        #: The controls' tables, created beside the core's (gateway/store/schema.py) at start-up.
        self.schemas = tuple(schemas)
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emrguard-store")
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._inflight: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        #: (hash, seq) of the newest committed audit record; only the writer thread moves it.
        self.chain_head: tuple[str, int] = (GENESIS, 0)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.row_factory = sqlite3.Row
        for script in (SCHEMA, *self.schemas):
            db.executescript(script)
        row = db.execute("SELECT hash, seq FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        self.chain_head = (row[0], row[1]) if row else (GENESIS, 0)
        self._db = db

    async def start(self) -> None:
        await self._run(self._open)
        self._wakeup = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="emrguard-audit-writer")

    async def close(self) -> None:
        # Graceful: records already accepted are written before the connection closes.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while (self._pending or self._inflight) and self._writer is not None and loop.time() < deadline:
            await asyncio.sleep(0.005)
        await stop_task(self._writer)
        self._writer = None
        for _, fut in self._pending + self._inflight:
            if not fut.done():
                fut.set_exception(StoreClosed("store closed before the record was written"))
        self._pending.clear()
        self._inflight = []
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)

    async def ready(self) -> bool:
        if self._db is None:
            return False
        try:
            return await self._run(lambda: self._db.execute("SELECT 1").fetchone()[0] == 1)
        except sqlite3.Error:
            return False

    async def insert_audit(self, record: dict[str, Any]) -> int:
        """Return the record's seq once it is committed; raise if it cannot be (the caller withholds data)."""
        if self._db is None or self._wakeup is None:
            raise StoreClosed("store is not open")
        # Serialised here, so a record that cannot be encoded fails its own request, not the batch.
        encoded = canonical(record)  # the exact bytes the hash chain covers
        item = {**record, "_json": encoded}
        await self._enqueue(item)
        return int(item["_seq"])

    async def _enqueue(self, item: dict[str, Any]) -> None:
        """Hand an item to the group-commit writer; return once its transaction is committed."""
        if self._db is None or self._wakeup is None:
            raise StoreClosed("store is not open")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        self._wakeup.set()
        await fut

    async def _write_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self._inflight = batch
                try:
                    await self._run(self._write_batch, [record for record, _ in batch])
                except Exception:
                    # One bad record must not cost the others theirs: write them one by one, and
                    # only the requests whose own record failed learn it is not safe.
                    for record, fut in batch:
                        try:
                            await self._run(self._write_batch, [record])
                        except Exception as exc:
                            if not fut.done():
                                fut.set_exception(exc)
                        else:
                            if not fut.done():
                                fut.set_result(None)
                    self._inflight = []
                    continue
                # (On cancellation the batch stays in _inflight, and close() fails its waiters.)
                self._inflight = []
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

    def _write_batch(self, records: list[dict[str, Any]]) -> None:
        db = self._db
        if db is None:
            raise StoreClosed("store closed")
        db.execute("BEGIN IMMEDIATE")
        head, head_seq = self.chain_head
        try:
            for record in records:
                if record.get("_kind") == "alert":
                    db.execute(
                        "INSERT INTO alerts (time, request_id, event, severity, operator, patients, detail)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            record["time"],
                            record["request_id"],
                            record["event"],
                            record["severity"],
                            record["operator"],
                            record["_patients"],
                            record["_detail"],
                        ),
                    )
                    continue
                prev = head
                head = chain_hash(prev, record["_json"])
                cur = db.execute(
                    "INSERT INTO audit (request_id, time, operator, purpose, interaction, resource_type, decision, status,"
                    " record, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record["request_id"],
                        record["time"],
                        record.get("operator"),
                        record.get("purpose"),
                        record.get("interaction"),
                        record.get("resource_type"),
                        record["decision"],
                        record["status"],
                        record["_json"],
                        prev,
                        head,
                    ),
                )
                seq = cur.lastrowid
                assert seq is not None  # an INSERT into a rowid table always has one
                record["_seq"] = seq  # (set again if the batch is rolled back and retried alone)
                head_seq = seq
                rows = [(seq, p, "targeted") for p in record.get("patients_targeted") or []]
                rows += [(seq, p, "disclosed") for p in record.get("patients_disclosed") or []]
                if rows:
                    db.executemany(
                        "INSERT OR IGNORE INTO audit_patient (seq, patient, role) VALUES (?, ?, ?)", rows
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.chain_head = (head, head_seq)  # only a committed record moves the head

    async def audit_records(
        self, *, operator: str | None = None, patient: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first (a shorthand of :meth:`search_audit`)."""
        page = await self.search_audit(AuditQuery(operator=operator, patient=patient, limit=limit))
        return page["records"]

    async def search_audit(self, query: AuditQuery) -> dict[str, Any]:
        """One page of audit records matching ``query`` (gateway/audit/search.py)."""

        def run_query() -> dict[str, Any]:
            assert self._db is not None
            return audit_search.run(self._db, query)

        return await self._run(run_query)

    async def audit_record(self, request_id: str) -> dict[str, Any] | None:
        page = await self.search_audit(AuditQuery(request_id=request_id, limit=1))
        return page["records"][0] if page["records"] else None

    # --- the controls' state (admin changes: rare, each its own commit) ---------------------------

    def _transaction(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(db, *args)`` in one write transaction, on the store thread."""
        db = self._db
        if db is None:
            raise StoreClosed("store closed")
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db, *args)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    def _query(self, sql: str, args: Any) -> list[sqlite3.Row]:
        db = self._db
        if db is None:
            raise StoreClosed("store closed")
        return db.execute(sql, args).fetchall()

    async def write(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(db, *args)`` in one write transaction on the store thread; its result."""
        if self._db is None:
            raise StoreClosed("store is not open")
        return await self._run(self._transaction, fn, *args)

    async def read(self, sql: str, args: Any = ()) -> list[sqlite3.Row]:
        """One query on the store thread: its rows."""
        if self._db is None:
            raise StoreClosed("store is not open")
        return await self._run(self._query, sql, args)

    # --- forwarding (the audit table is the durable outbox; a cursor says what was delivered) ----

    async def forward_cursor(self, destination: str) -> int:
        rows = await self.read("SELECT seq FROM audit_forward WHERE destination = ?", (destination,))
        return int(rows[0][0]) if rows else 0

    async def set_forward_cursor(self, destination: str, seq: int) -> None:
        def upsert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO audit_forward (destination, seq) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET seq = excluded.seq",
                (destination, seq),
            )

        await self.write(upsert)

    async def records_after(self, seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = await self.read(
            "SELECT seq, record FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [(int(s), orjson.loads(blob)) for s, blob in rows]

    # --- alerts (II.3) --------------------------------------------------------------------------

    async def insert_alert(self, alert: dict[str, Any]) -> None:
        """Record an alert; return once it is committed.

        Alerts ride the audit group commit (the same queue and transactions as audit records), so
        a burst of alerts during an attack costs no extra fsyncs and never stalls the audit writer.
        Keys: ``event`` (required), ``severity`` (default "warning"), ``time`` (default now),
        ``request_id``, ``operator``, ``patients`` (list), ``detail`` (object). Any other key (an
        obligation's ``rule``, ``reason``, ...) is kept in ``detail``, never dropped; ``type`` is not.
        """
        if not alert.get("event"):
            raise StoreInvalid("an alert needs an event")
        extra = {k: v for k, v in alert.items() if k not in ALERT_KEYS}
        item = {
            "_kind": "alert",
            "time": alert.get("time") or utc_now(),
            "request_id": alert.get("request_id"),
            "event": str(alert["event"]),
            "severity": str(alert.get("severity") or "warning"),
            "operator": alert.get("operator"),
            # Serialised here: an alert that cannot be encoded fails its caller, not the batch.
            "_patients": orjson.dumps(list(alert.get("patients") or [])),
            "_detail": orjson.dumps({**extra, **(alert.get("detail") or {})}),
        }
        await self._enqueue(item)

    async def list_alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        rows = await self.read(
            "SELECT seq, time, request_id, event, severity, operator, patients, detail"
            " FROM alerts ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [
            {
                "seq": r[0],
                "time": r[1],
                "request_id": r[2],
                "event": r[3],
                "severity": r[4],
                "operator": r[5],
                "patients": orjson.loads(r[6]),
                "detail": orjson.loads(r[7]),
            }
            for r in rows
        ]
