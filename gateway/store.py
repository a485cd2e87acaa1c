"""The gateway's state in SQLite (the default; PostgreSQL comes with shared-state deployments).

All SQLite work runs on one dedicated thread (sqlite3 connections are not for sharing), so the
event loop never waits on disk. Audit records are group-committed: every record that arrives while
the previous commit is on disk goes into the next transaction, so many concurrent requests share
one commit (WAL, synchronous=FULL: a committed record survives power loss), and each request
still waits for its own record to be committed before its response is released (II.2).
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id   TEXT NOT NULL UNIQUE,
    time         TEXT NOT NULL,
    operator     TEXT,
    purpose      TEXT,
    interaction  TEXT,
    resource_type TEXT,
    decision     TEXT NOT NULL,
    status       INTEGER NOT NULL,
    record       BLOB NOT NULL           -- the whole audit record, JSON (gateway/audit.py)
);
CREATE INDEX IF NOT EXISTS audit_operator_time ON audit (operator, time);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS audit_patient (   -- who saw what: one row per patient targeted or disclosed
    seq      INTEGER NOT NULL REFERENCES audit (seq),
    patient  TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('targeted', 'disclosed')),
    PRIMARY KEY (patient, seq, role)
) WITHOUT ROWID;
"""
MAX_BATCH = 512


class StoreClosed(RuntimeError):
    pass


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emrguard-store")
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._inflight: list[tuple[dict[str, Any], asyncio.Future[None]]] = []

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
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
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
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
            return await self._run(lambda: self._db.execute("SELECT 1").fetchone() == (1,))  # type: ignore[union-attr]
        except sqlite3.Error:
            return False

    async def insert_audit(self, record: dict[str, Any]) -> None:
        """Return once the record is committed; raise if it cannot be (the caller withholds data)."""
        if self._db is None or self._wakeup is None:
            raise StoreClosed("store is not open")
        # Serialised here, so a record that cannot be encoded fails its own request, not the batch.
        encoded = orjson.dumps(record)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(({**record, "_json": encoded}, fut))
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
        try:
            for record in records:
                cur = db.execute(
                    "INSERT INTO audit (request_id, time, operator, purpose, interaction, resource_type, decision, status, record)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    ),
                )
                seq = cur.lastrowid
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

    async def audit_records(
        self, *, operator: str | None = None, patient: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first. A first query API; issue 4 brings the full audit search."""
        sql = "SELECT a.record FROM audit a"
        args: list[Any] = []
        where = []
        if patient:
            sql += " JOIN audit_patient p ON p.seq = a.seq"
            where.append("p.patient = ?")
            args.append(patient)
        if operator:
            where.append("a.operator = ?")
            args.append(operator)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY a.seq ORDER BY a.seq DESC LIMIT ?"
        args.append(limit)

        def query() -> list[dict[str, Any]]:
            assert self._db is not None
            return [orjson.loads(row[0]) for row in self._db.execute(sql, args).fetchall()]

        return await self._run(query)
