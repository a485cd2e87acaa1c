"""The gateway's database: SQLite on one dedicated thread (PostgreSQL comes with shared-state
deployments).

All SQLite work runs on one thread (sqlite3 connections are not for sharing), so the event loop
never waits on disk. Audit records are group-committed: every record that arrives while the
previous commit is on disk goes into the next transaction, so many concurrent requests share one
commit (WAL, synchronous=FULL: a committed record survives power loss), and each request still
waits for its own record to be committed before its response is released (II.2). Alerts (II.3)
ride the same group commit.

A store that cannot commit (another process holds its write lock, the disk is full) fails no record
silently (II.2): a request waits at most ``store_busy_timeout_seconds`` for its commit and then gets
503, and every record and alert not committed stays, in order, in the bounded backlog
(gateway/store/backlog.py, spilled to a file on another volume if one is set) until the
writer (gateway/store/commit.py), retrying with backoff, can commit it. The outage is alerted once
(II.3), ``/readyz`` names it, and a record that could not be kept at all is counted in
:attr:`Store.records_lost`.

Controls keep their own tables (``Plugin.schema``) and reach them through :meth:`Store.read` and
:meth:`Store.write`, each a statement or a transaction on the store thread; rows come back as
``sqlite3.Row``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from gateway.aio import stop_task
from gateway.audit import search as audit_search
from gateway.audit.chain import GENESIS, canonical
from gateway.audit.search import AuditQuery
from gateway.store.backlog import Item
from gateway.store.commit import (
    MAX_BATCH,
    STORE_UNAVAILABLE,
    GroupCommit,
    StoreClosed,
    StoreUnavailable,
    alert_item,
    rollback,
    utc_now,
)
from gateway.store.schema import SCHEMA

__all__ = [
    "MAX_BATCH",
    "STORE_UNAVAILABLE",
    "Store",
    "StoreClosed",
    "StoreConflict",
    "StoreError",
    "StoreInvalid",
    "StoreNotFound",
    "StoreUnavailable",
    "utc_now",
]


class StoreError(Exception):
    """A state change the store refuses; the message says why (gateway/admin.py answers it)."""


class StoreNotFound(StoreError):
    """No such grant, or no active seal (-> 404)."""


class StoreConflict(StoreError):
    """The change contradicts the current state: already sealed, already revoked (-> 409)."""


class StoreInvalid(StoreError, ValueError):
    """The data breaks a rule the tables enforce (admin routes validate first: a bug -> 400)."""


class Store(GroupCommit):
    def __init__(
        self,
        path: str,
        schemas: tuple[str, ...] | list[str] = (),
        *,
        busy_timeout: float = 2.0,
        backlog_max: int = 10000,
        spill_file: str = "",
    ) -> None:
        self.path = path
        #: The controls' tables, created beside the core's (gateway/store/schema.py) at start-up.
        self.schemas = tuple(schemas)
        self._db = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emrguard-store")
        #: (hash, seq) of the newest committed audit record; only the writer thread moves it.
        self.chain_head = (GENESIS, 0)
        self._init_commit(busy_timeout, backlog_max, spill_file)  # gateway/store/commit.py

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # The busy timeout bounds how long a statement waits for another process's write lock.
        db = sqlite3.connect(
            self.path, timeout=self.busy_timeout, check_same_thread=False, isolation_level=None
        )
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
        await self._replay_spill()
        self._writer = asyncio.create_task(self._write_loop(), name="emrguard-audit-writer")
        if self.backlog.items:  # replayed records are on the chain before the first request
            self._wakeup.set()
            deadline = time.monotonic() + self.busy_timeout
            while self.backlog.items and self.failure is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        # Graceful: records already accepted are written before the connection closes.
        deadline = time.monotonic() + 5.0
        while self.backlog.items and self._writer is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await stop_task(self._writer)
        self._writer = None
        if self._db is not None:
            await self._run(lambda: None)  # a batch already on the store thread finishes first
        await self._settle()
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)

    async def ready(self) -> bool:
        if self._db is None or self.failure is not None:
            return False
        try:
            return await self._run(lambda: self._db.execute("SELECT 1").fetchone()[0] == 1)
        except sqlite3.Error:
            return False

    async def insert_audit(self, record: dict[str, Any]) -> int:
        """Return the record's seq once it is committed; raise if it cannot be (the caller withholds
        data). After ``busy_timeout`` the record is withdrawn and :class:`StoreUnavailable` raised."""
        # Serialised here, so a record that cannot be encoded fails its own request, not the batch.
        encoded = canonical(record)  # the exact bytes the hash chain covers
        item = Item("audit", {**record, "_json": encoded}, asyncio.get_running_loop().create_future())
        self._enqueue(item)
        await self._wait(item)
        return int(item.row["_seq"])

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
            rollback(db)
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

    async def insert_alert(self, alert: dict[str, Any], wait: bool = True) -> None:
        """Record an alert; return once it is committed (``wait``), else once it is queued.

        Alerts ride the audit group commit (the same queue and transactions as audit records), so
        a burst of alerts during an attack costs no extra fsyncs and never stalls the audit writer.
        Keys: ``event`` (required), ``severity`` (default "warning"), ``time`` (default now),
        ``request_id``, ``operator``, ``patients`` (list), ``detail`` (object). Any other key (an
        obligation's ``rule``, ``reason``, ...) is kept in ``detail``, never dropped; ``type`` is not.
        An alert not committed in time is kept (it commits when the store can), and this raises.
        """
        if not alert.get("event"):
            raise StoreInvalid("an alert needs an event")
        item = alert_item(alert)
        if wait:
            item.fut = asyncio.get_running_loop().create_future()
        self._enqueue(item)
        if wait:
            await self._wait(item)

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
