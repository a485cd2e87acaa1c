"""The gateway's state in SQLite (the default; PostgreSQL comes with shared-state deployments).

aiosqlite keeps sqlite3 on its own thread so the event loop never waits on disk. WAL mode lets
audit search read while requests write.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosqlite
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


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # One connection, many requests: the lock keeps each record's rows in one transaction.
        self._write_lock = asyncio.Lock()

    async def start(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ready(self) -> bool:
        if self._db is None:
            return False
        try:
            async with self._db.execute("SELECT 1") as cur:
                return (await cur.fetchone()) == (1,)
        except Exception:
            return False

    async def insert_audit(self, record: dict[str, Any]) -> None:
        """Commit one audit record; raises if it cannot be written (the caller then withholds data)."""
        if self._db is None:
            raise RuntimeError("store is not open")
        async with self._write_lock:
            await self._insert_audit(self._db, record)

    @staticmethod
    async def _insert_audit(db: aiosqlite.Connection, record: dict[str, Any]) -> None:
        cur = await db.execute(
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
                orjson.dumps(record),
            ),
        )
        seq = cur.lastrowid
        rows = [(seq, p, "targeted") for p in record.get("patients_targeted") or []]
        rows += [(seq, p, "disclosed") for p in record.get("patients_disclosed") or []]
        if rows:
            await db.executemany(
                "INSERT OR IGNORE INTO audit_patient (seq, patient, role) VALUES (?, ?, ?)", rows
            )
        await db.commit()

    async def audit_records(
        self, *, operator: str | None = None, patient: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first. A first query API; issue 4 brings the full audit search."""
        assert self._db is not None
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
        async with self._db.execute(sql, args) as cur:
            return [orjson.loads(row[0]) for row in await cur.fetchall()]
