"""The gateway's state in SQLite (the default; PostgreSQL comes with shared-state deployments).

All SQLite work runs on one dedicated thread (sqlite3 connections are not for sharing), so the
event loop never waits on disk. Audit records are group-committed: every record that arrives while
the previous commit is on disk goes into the next transaction, so many concurrent requests share
one commit (WAL, synchronous=FULL: a committed record survives power loss), and each request
still waits for its own record to be committed before its response is released (II.2).

Besides the audit trail the store holds the notice's state, read on every request and changed
through the admin API (gateway/admin.py):

- ``grants``: time-bound permissions (II.1): trainee rotations, vendor agreements, exports. The
  store keeps them; whether one is in force *now* is the policy's call (it gets the time).
- ``seals``: 封存 of a patient's records during a public-controversy event (I.4); at most one
  active seal per patient. Nothing is cached: a seal is in force from the moment the call returns.
- ``alerts``: anomalous or unauthorised access, for senior management (II.3). Alerts share the
  audit group commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway import audit_search
from gateway.aio import stop_task
from gateway.audit_chain import GENESIS, canonical, chain_hash
from gateway.audit_search import AuditQuery

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
    record       BLOB NOT NULL,          -- the whole audit record, canonical JSON (gateway/audit.py)
    prev_hash    TEXT NOT NULL,          -- hash chain (gateway/audit_chain.py): tamper evidence, II.2
    hash         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_operator_time ON audit (operator, time);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE INDEX IF NOT EXISTS audit_resource ON audit (resource_type, time);
CREATE TABLE IF NOT EXISTS audit_patient (   -- who saw what: one row per patient targeted or disclosed
    seq      INTEGER NOT NULL REFERENCES audit (seq),
    patient  TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('targeted', 'disclosed')),
    PRIMARY KEY (patient, seq, role)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (          -- II.1: time-bound permissions
    id            TEXT PRIMARY KEY,          -- uuid4 hex
    kind          TEXT NOT NULL CHECK (kind IN ('rotation', 'vendor', 'export')),
    operator      TEXT NOT NULL,             -- the holder's token `sub`
    dept          TEXT,
    purposes      BLOB NOT NULL,             -- JSON list of PurposeOfUse codes
    start         TEXT NOT NULL,             -- RFC 3339, UTC ("Z"), as given
    "end"         TEXT NOT NULL,
    scope         BLOB NOT NULL,             -- JSON {"types": [..], "fields": {Type: [..]}, "interactions": [..]}
    agreement     TEXT,                      -- vendor: the agreement's reference
    supervisor    TEXT,                      -- vendor: who supervises the service (II.1)
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT,
    revoked_by    TEXT,
    revoke_reason TEXT,
    CHECK (julianday(start) IS NOT NULL AND julianday("end") IS NOT NULL AND julianday(start) < julianday("end")),
    CHECK (kind <> 'rotation' OR dept IS NOT NULL),
    CHECK (kind <> 'vendor' OR (agreement IS NOT NULL AND supervisor IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS grants_operator ON grants (operator, revoked_at);
CREATE TABLE IF NOT EXISTS seals (           -- I.4: 封存
    id            TEXT PRIMARY KEY,          -- uuid4 hex
    patient       TEXT NOT NULL,             -- "Patient/<id>"
    reason        TEXT NOT NULL,
    case_ref      TEXT NOT NULL,
    authorised    BLOB NOT NULL,             -- JSON list of operator ids who may still access
    sealed_by     TEXT NOT NULL,
    sealed_at     TEXT NOT NULL,
    unsealed_by   TEXT,
    unsealed_at   TEXT,
    unseal_reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS seals_active ON seals (patient) WHERE unsealed_at IS NULL;
CREATE INDEX IF NOT EXISTS seals_patient ON seals (patient, sealed_at);
CREATE TABLE IF NOT EXISTS alerts (          -- II.3: anomalous or unauthorised access
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time       TEXT NOT NULL,
    request_id TEXT,
    event      TEXT NOT NULL,
    severity   TEXT NOT NULL,
    operator   TEXT,
    patients   BLOB NOT NULL,                -- JSON list
    detail     BLOB NOT NULL                 -- JSON object
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts (time);
CREATE TABLE IF NOT EXISTS audit_forward (     -- how far each forwarding destination has received
    destination TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL
);
"""
MAX_BATCH = 512
#: SQLite's default bound on host parameters is 32766; stay well inside it per IN (...) list.
MAX_IN_PARAMS = 900

GRANT_COLUMNS = (
    'id, kind, operator, dept, purposes, start, "end", scope, agreement, supervisor,'
    " created_by, created_at, revoked_at, revoked_by, revoke_reason"
)
SEAL_COLUMNS = (
    "id, patient, reason, case_ref, authorised, sealed_by, sealed_at, unsealed_by, unsealed_at, unseal_reason"
)
GRANT_KINDS = ("rotation", "vendor", "export")
ALERT_KEYS = frozenset({"type", "time", "request_id", "event", "severity", "operator", "patients", "detail"})


class StoreClosed(RuntimeError):
    pass


class StoreError(Exception):
    """A state change the store refuses; the message says why (admin.py turns it into an answer)."""


class StoreNotFound(StoreError):
    """No such grant, or no active seal (-> 404)."""


class StoreConflict(StoreError):
    """The change contradicts the current state: already sealed, already revoked (-> 409)."""


class StoreInvalid(StoreError, ValueError):
    """The data breaks a rule the tables enforce (admin.py validates first, so this is a bug -> 400)."""


def utc_now() -> str:
    """Now, RFC 3339 UTC with milliseconds and "Z" (the format of the policy input's `time`)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _grant_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "kind": row[1],
        "operator": row[2],
        "dept": row[3],
        "purposes": orjson.loads(row[4]),
        "start": row[5],
        "end": row[6],
        "scope": orjson.loads(row[7]),
        "agreement": row[8],
        "supervisor": row[9],
        "created_by": row[10],
        "created_at": row[11],
        "revoked_at": row[12],
        "revoked_by": row[13],
        "revoke_reason": row[14],
    }


def _seal_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "patient": row[1],
        "reason": row[2],
        "case_ref": row[3],
        "authorised": orjson.loads(row[4]),
        "sealed_by": row[5],
        "sealed_at": row[6],
        "unsealed_by": row[7],
        "unsealed_at": row[8],
        "unseal_reason": row[9],
    }


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
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
        db.executescript(SCHEMA)
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
            return await self._run(lambda: self._db.execute("SELECT 1").fetchone() == (1,))  # type: ignore[union-attr]
        except sqlite3.Error:
            return False

    async def insert_audit(self, record: dict[str, Any]) -> None:
        """Return once the record is committed; raise if it cannot be (the caller withholds data)."""
        if self._db is None or self._wakeup is None:
            raise StoreClosed("store is not open")
        # Serialised here, so a record that cannot be encoded fails its own request, not the batch.
        encoded = canonical(record)  # the exact bytes the hash chain covers
        await self._enqueue({**record, "_json": encoded})

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
        """One page of audit records matching ``query`` (gateway/audit_search.py)."""

        def run_query() -> dict[str, Any]:
            assert self._db is not None
            return audit_search.run(self._db, query)

        return await self._run(run_query)

    async def audit_record(self, request_id: str) -> dict[str, Any] | None:
        page = await self.search_audit(AuditQuery(request_id=request_id, limit=1))
        return page["records"][0] if page["records"] else None

    # --- transactions for the notice's state (admin changes: rare, each its own commit) -----------

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

    def _query(self, sql: str, args: Any) -> list[tuple[Any, ...]]:
        db = self._db
        if db is None:
            raise StoreClosed("store closed")
        return db.execute(sql, args).fetchall()

    async def _write(self, fn: Any, *args: Any) -> Any:
        if self._db is None:
            raise StoreClosed("store is not open")
        return await self._run(self._transaction, fn, *args)

    async def _read(self, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        if self._db is None:
            raise StoreClosed("store is not open")
        return await self._run(self._query, sql, args)

    # --- forwarding (the audit table is the durable outbox; a cursor says what was delivered) ----

    async def forward_cursor(self, destination: str) -> int:
        rows = await self._read("SELECT seq FROM audit_forward WHERE destination = ?", (destination,))
        return int(rows[0][0]) if rows else 0

    async def set_forward_cursor(self, destination: str, seq: int) -> None:
        def upsert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO audit_forward (destination, seq) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET seq = excluded.seq",
                (destination, seq),
            )

        await self._write(upsert)

    async def records_after(self, seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = await self._read(
            "SELECT seq, record FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [(int(s), orjson.loads(blob)) for s, blob in rows]

    # --- grants (II.1: time-bound permissions) ------------------------------------------------

    async def create_grant(self, grant: dict[str, Any], by: str) -> dict[str, Any]:
        """Store a new grant (fields as in the ``grants`` table; ``id`` and ``created_*`` are set here).

        ``start`` and ``end`` are kept exactly as given, never rounded or extended: a trainee's
        rotation cannot outlast itself (II.1). The admin API validates first; the table's CHECKs
        (start < end, rotation needs dept, vendor needs agreement and supervisor) are the backstop
        and raise StoreInvalid.
        """
        row = (
            uuid.uuid4().hex,
            grant.get("kind"),
            grant.get("operator"),
            grant.get("dept"),
            orjson.dumps(list(grant.get("purposes") or [])),
            grant.get("start"),
            grant.get("end"),
            orjson.dumps(grant.get("scope") or {}),
            grant.get("agreement"),
            grant.get("supervisor"),
            by,
            utc_now(),
        )

        def insert(db: sqlite3.Connection) -> dict[str, Any]:
            try:
                db.execute(
                    'INSERT INTO grants (id, kind, operator, dept, purposes, start, "end", scope,'
                    " agreement, supervisor, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                raise StoreInvalid(f"grant refused by the store: {exc}") from None
            return _grant_row(
                db.execute(f"SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?", (row[0],)).fetchone()
            )

        return await self._write(insert)

    async def get_grant(self, grant_id: str) -> dict[str, Any] | None:
        rows = await self._read(f"SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?", (grant_id,))
        return _grant_row(rows[0]) if rows else None

    async def list_grants(
        self, operator: str | None = None, include_revoked: bool = False
    ) -> list[dict[str, Any]]:
        """Grants, newest first; by default only those not revoked (expired ones are listed too)."""
        where, args = [], []
        if operator is not None:
            where.append("operator = ?")
            args.append(operator)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        sql = f"SELECT {GRANT_COLUMNS} FROM grants"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id"
        return [_grant_row(r) for r in await self._read(sql, args)]

    async def revoke_grant(self, grant_id: str, by: str, reason: str) -> dict[str, Any]:
        """Revoke now; StoreNotFound if there is no such grant, StoreConflict if already revoked."""
        now = utc_now()

        def revoke(db: sqlite3.Connection) -> dict[str, Any]:
            cur = db.execute(
                "UPDATE grants SET revoked_at = ?, revoked_by = ?, revoke_reason = ?"
                " WHERE id = ? AND revoked_at IS NULL",
                (now, by, reason, grant_id),
            )
            row = db.execute(f"SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?", (grant_id,)).fetchone()
            if row is None:
                raise StoreNotFound(f"no grant with id '{grant_id}'")
            if cur.rowcount == 0:
                raise StoreConflict(f"grant '{grant_id}' was already revoked at {row[12]}")
            return _grant_row(row)

        return await self._write(revoke)

    async def grants_for(self, operator: str) -> list[dict[str, Any]]:
        """The operator's grants that are not revoked (one indexed query; called on every request).

        Whether a grant is in force *now* (start <= time < end) is the policy's call.
        """
        rows = await self._read(
            f"SELECT {GRANT_COLUMNS} FROM grants WHERE operator = ? AND revoked_at IS NULL ORDER BY start",
            (operator,),
        )
        return [_grant_row(r) for r in rows]

    # --- seals (I.4: 封存) ----------------------------------------------------------------------

    async def seal_patient(
        self, patient: str, reason: str, case_ref: str, authorised: list[str], by: str
    ) -> dict[str, Any]:
        """Seal a patient's records; committed (and so in force for the next request) on return.

        StoreConflict if the patient is already sealed (at most one active seal per patient).
        """
        row = (
            uuid.uuid4().hex,
            patient,
            reason,
            case_ref,
            orjson.dumps(list(authorised)),
            by,
            utc_now(),
        )

        def seal(db: sqlite3.Connection) -> dict[str, Any]:
            active = db.execute(
                "SELECT sealed_at, case_ref FROM seals WHERE patient = ? AND unsealed_at IS NULL", (patient,)
            ).fetchone()
            if active is not None:
                raise StoreConflict(f"{patient} is already sealed (since {active[0]}, case {active[1]})")
            try:
                db.execute(
                    "INSERT INTO seals (id, patient, reason, case_ref, authorised, sealed_by, sealed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:  # another process sealed it in between
                raise StoreConflict(f"{patient} is already sealed ({exc})") from None
            return _seal_row(
                db.execute(f"SELECT {SEAL_COLUMNS} FROM seals WHERE id = ?", (row[0],)).fetchone()
            )

        return await self._write(seal)

    async def unseal_patient(self, patient: str, by: str, reason: str) -> dict[str, Any]:
        """Lift the patient's active seal; StoreNotFound if the patient is not sealed."""
        now = utc_now()

        def unseal(db: sqlite3.Connection) -> dict[str, Any]:
            active = db.execute(
                "SELECT id FROM seals WHERE patient = ? AND unsealed_at IS NULL", (patient,)
            ).fetchone()
            if active is None:
                raise StoreNotFound(f"{patient} is not sealed")
            db.execute(
                "UPDATE seals SET unsealed_by = ?, unsealed_at = ?, unseal_reason = ? WHERE id = ?",
                (by, now, reason, active[0]),
            )
            return _seal_row(
                db.execute(f"SELECT {SEAL_COLUMNS} FROM seals WHERE id = ?", (active[0],)).fetchone()
            )

        return await self._write(unseal)

    async def active_seals(self, patients: list[str]) -> dict[str, dict[str, Any]]:
        """The active seal of each of ``patients`` that is sealed, by patient (called on every request).

        One query on the partial unique index (a few hundred patients per statement at most); no
        store round trip at all for a request that names no patient.
        """
        wanted = sorted(set(patients))
        if not wanted:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(wanted), MAX_IN_PARAMS):
            chunk = wanted[i : i + MAX_IN_PARAMS]
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT {SEAL_COLUMNS} FROM seals WHERE unsealed_at IS NULL AND patient IN ({marks})", chunk
            )
            for row in rows:
                found[row[1]] = _seal_row(row)
        return found

    async def seal_history(
        self, patient: str | None = None, *, active_only: bool = False
    ) -> list[dict[str, Any]]:
        """Seals, active and lifted, newest first (II.2: who sealed and unsealed what, when, why)."""
        where, args = [], []
        if patient is not None:
            where.append("patient = ?")
            args.append(patient)
        if active_only:
            where.append("unsealed_at IS NULL")
        sql = f"SELECT {SEAL_COLUMNS} FROM seals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY sealed_at DESC, id"
        return [_seal_row(r) for r in await self._read(sql, args)]

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
        rows = await self._read(
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
