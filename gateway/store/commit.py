"""Group commit, and what it does when the store cannot commit (II.2 traceability, II.3 alerts).

The writer commits the backlog (gateway/store/backlog.py) oldest first, many records to one
transaction; a request waits for its own record's commit at most ``busy_timeout`` seconds (SQLite's
busy timeout too), then withdraws it and is answered 503 — its 503 record is kept instead. A fault
of the store (another process holds the write lock, the disk is full, an I/O error) keeps every
item where it is: the writer tries again with backoff, on its own time and with a short busy
timeout (reads on the store thread are not held up behind it), and on the first commit after an
outage everything kept is written, in order, onto the chain. The outage is alerted once (II.3:
``audit.store_unavailable``, a structlog error now, an alert in the store when it can commit),
``/readyz`` names it (:meth:`GroupCommit.health`), and a record that could not be kept at all is
counted (``records_lost``, logged at error level): it must stay 0.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from gateway.audit.chain import canonical, chain_hash
from gateway.store.backlog import DONE, Backlog, Item, Withdrawn

log = structlog.get_logger("emrguard.store")

MAX_BATCH = 512
#: While the store cannot commit, the writer tries again after this long, doubling up to the most.
RETRY_FIRST_SECONDS, RETRY_MOST_SECONDS = 0.05, 1.0
#: The busy timeout of those retries: short, so reads on the store thread are not held up behind them.
RETRY_BUSY_SECONDS = 0.1
#: II.3: raised once when the store starts failing to commit (committed when it can again).
STORE_UNAVAILABLE = "audit.store_unavailable"
ALERT_KEYS = frozenset({"type", "time", "request_id", "event", "severity", "operator", "patients", "detail"})
_ALERT_COLUMNS = ("time", "request_id", "event", "severity", "operator", "_patients", "_detail")


class StoreClosed(RuntimeError):
    pass


class StoreUnavailable(RuntimeError):
    """The store cannot commit now (locked, full): the request gets 503; its record is not lost."""


def utc_now() -> str:
    """Now, RFC 3339 UTC with milliseconds and "Z" (the format of the policy input's `time`)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def store_fault(exc: BaseException) -> bool:
    """A fault of the store (locked, busy, full, I/O, read-only, corrupt), not of the record: the
    record is kept and retried. A record the tables refuse (a duplicate request id) fails alone."""
    refused = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.DataError)
    return not isinstance(exc, refused) and isinstance(exc, (sqlite3.DatabaseError, OSError))


def rollback(db: sqlite3.Connection) -> None:
    # SQLite itself rolls back on some errors (SQLITE_FULL): a second ROLLBACK would hide the first.
    if db.in_transaction:
        db.execute("ROLLBACK")


def alert_item(alert: dict[str, Any]) -> Item:
    """An alert as the store inserts it; serialised here, so one that cannot be encoded fails its
    caller, not the batch. Keys other than the columns are kept in ``detail``; ``type`` is not."""
    extra = {k: v for k, v in alert.items() if k not in ALERT_KEYS}
    row = {
        "time": alert.get("time") or utc_now(),
        "request_id": alert.get("request_id"),
        "event": str(alert["event"]),
        "severity": str(alert.get("severity") or "warning"),
        "operator": alert.get("operator"),
        "_patients": orjson.dumps(list(alert.get("patients") or [])),
        "_detail": orjson.dumps({**extra, **(alert.get("detail") or {})}),
    }
    return Item("alert", row)


class GroupCommit:
    """The store's writer half (mixed into gateway.store.db.Store, which owns the connection)."""

    _db: sqlite3.Connection | None
    _thread: ThreadPoolExecutor
    chain_head: tuple[str, int]

    async def _run(self, fn: Any, *args: Any) -> Any:
        raise NotImplementedError

    def _init_commit(self, busy_timeout: float, backlog_max: int, spill_file: str) -> None:
        #: SQLite's busy timeout, and how long a request waits for its record's commit (then 503).
        self.busy_timeout = busy_timeout
        self.backlog = Backlog(backlog_max, spill_file)
        #: Records (and alerts) that could not be kept at all (II.2); it must stay 0.
        self.records_lost = 0
        #: Why the last commit failed; None once one succeeds (``/readyz`` names it).
        self.failure: str | None = None
        self.failing_since: float | None = None
        self.last_commit: float | None = None
        #: Called after a commit of kept items (nobody waited for them): the log follows.
        self.on_kept_commit: list[Callable[[], None]] = []
        self._busy_ms = int(busy_timeout * 1000)
        self._spill_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emrguard-spill")
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._retry = 0.0

    def health(self) -> dict[str, Any]:
        """What ``/readyz`` says about the trail: can the store commit, how much waits, what was lost."""
        if self._db is None:
            state = "closed"
        elif self.failure is not None:
            state = f"cannot commit: {self.failure}"
        else:
            state = "ok"
        return {"store": state, "backlog": len(self.backlog), "records_lost": self.records_lost}

    def admit(self) -> bool:
        """Promise a place in the backlog to a new request's record; False: refuse it (503) first."""
        return self.backlog.admit()

    def release(self) -> None:
        self.backlog.release()

    def lost(self, request_id: str | None, why: str) -> None:
        """A record (or alert) that could not be kept at all: counted and logged (II.2)."""
        self.records_lost += 1
        log.error("audit.record_lost", request_id=request_id, reason=why, records_lost=self.records_lost)

    async def keep_audit(self, record: dict[str, Any]) -> bool:
        """Keep a record nobody waits for (a 503's own, II.2): committed when the store can, and in the
        spill file (if one is set) once this returns. False: it could not be kept (counted)."""
        try:
            self._enqueue(Item("audit", {**record, "_json": canonical(record)}))
        except Exception as exc:  # whatever it is, the loss is counted, not raised
            self.lost(record.get("request_id"), str(exc) or type(exc).__name__)
            return False
        try:
            await asyncio.wait_for(asyncio.shield(self._spill_now()), self.busy_timeout)
        except TimeoutError:
            log.error("audit_spill_slow", request_id=record.get("request_id"))
        return True

    def _enqueue(self, item: Item) -> None:
        """Hand an item to the group-commit writer."""
        if self._db is None or self._wakeup is None:
            raise StoreClosed("store is not open")
        if not self.backlog.has_room():
            raise StoreUnavailable(f"the audit backlog is full ({len(self.backlog)} waiting)")
        self.backlog.append(item)
        self._wakeup.set()

    async def _wait(self, item: Item) -> None:
        """Until the item is committed, at most ``busy_timeout``; then withdraw it (or keep an alert)."""
        assert item.fut is not None
        try:
            return await asyncio.wait_for(asyncio.shield(item.fut), self.busy_timeout)
        except TimeoutError:
            pass
        while item.kind == "audit" and not self.backlog.withdraw(item):
            try:  # sealed: its commit is under way, and that commit's outcome is the answer
                return await asyncio.wait_for(asyncio.shield(item.fut), 0.05)
            except TimeoutError:
                continue
        if item.kind == "alert":
            item.fut = None  # kept: an alert is true whatever the answer; it commits when it can
        raise StoreUnavailable(self.failure or f"not committed within {self.busy_timeout:g} s")

    async def _write_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            if self._retry:
                await asyncio.sleep(self._retry)  # failing: retry on the writer's time, not per request
            else:
                await self._wakeup.wait()
            self._wakeup.clear()
            await self._drain()

    async def _drain(self) -> None:
        """Commit the backlog, oldest first, until it is empty or the store fails."""
        while self.backlog.items:
            batch = self.backlog.batch(MAX_BATCH)
            try:
                await self._run(self._write_batch, batch)
            except Withdrawn:
                continue  # a request took its record back just before COMMIT: form the batch again
            except Exception as exc:
                if store_fault(exc):
                    return await self._failed(exc)
                # One bad record must not cost the others theirs: write them one by one, and only
                # the requests whose own record failed learn it is not safe.
                if not await self._one_by_one(batch):
                    return
                continue
            # (On cancellation the batch stays queued, and close() settles its waiters.)
            self._committed(batch)

    async def _one_by_one(self, batch: list[Item]) -> bool:
        for item in batch:
            if item.state == DONE or item not in self.backlog.items:
                continue  # withdrawn meanwhile
            try:
                await self._run(self._write_batch, [item])
            except Withdrawn:
                continue
            except Exception as exc:
                if store_fault(exc):
                    await self._failed(exc)
                    return False
                self.backlog.done([item])
                self.backlog.discard([item])
                if item.fut is not None and not item.fut.done():
                    item.fut.set_exception(exc)
                else:
                    self.lost(item.row.get("request_id"), f"refused by the store: {exc}")
            else:
                self._committed([item])
        return True

    def _committed(self, batch: list[Item]) -> None:
        self.backlog.discard(batch)
        for item in batch:
            if item.fut is not None and not item.fut.done():
                item.fut.set_result(None)
        self.last_commit, self._retry = time.monotonic(), 0.0
        if self.failure is not None:
            outage = time.monotonic() - (self.failing_since or time.monotonic())
            log.warning("audit.store_recovered", outage_seconds=round(outage, 3), backlog=len(self.backlog))
            self.failure = self.failing_since = None
        spill = self.backlog.spill
        if spill is not None and spill.dirty and not self.backlog.spilled_waiting():
            asyncio.get_running_loop().run_in_executor(self._spill_thread, spill.clear)
        if any(item.fut is None for item in batch):
            for listener in self.on_kept_commit:
                listener()

    async def _failed(self, exc: BaseException) -> None:
        """The store cannot commit: keep everything, alert once per outage (II.3), retry later."""
        self.failure = str(exc) or type(exc).__name__
        self._retry = min(max(self._retry * 2, RETRY_FIRST_SECONDS), RETRY_MOST_SECONDS)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.error(STORE_UNAVAILABLE, error=self.failure, backlog=len(self.backlog))
            detail = {
                "error": self.failure,
                "en": "the audit store cannot commit; requests are refused (503) and their records kept",
                "zh": "审计存储无法写入;请求被拒绝(503),其审计记录已保留待写入",
            }
            self.backlog.append(
                alert_item({"event": STORE_UNAVAILABLE, "severity": "high", "detail": detail})
            )
        await self._spill_now()

    async def _spill_now(self) -> None:
        """Write the kept items not yet in the spill file there (whole lines, fsynced)."""
        items = self.backlog.unspilled()
        spill = self.backlog.spill
        if not items or spill is None:
            return
        try:
            lines = [item.spill_line() for item in items]
            await asyncio.get_running_loop().run_in_executor(self._spill_thread, spill.append, lines)
        except OSError as exc:
            for item in items:
                item.spilled = False  # still in memory; written at the next failure
            log.error("audit_spill_failed", path=str(spill.path), error=str(exc), items=len(items))

    async def _replay_spill(self) -> None:
        """At start-up: what a crash left in the spill file and the store lacks goes first."""
        spill = self.backlog.spill
        if spill is None:
            return
        for item in await self._run(self._unrecorded, spill.read()):
            item.spilled = True
            self.backlog.append(item)
        if self.backlog.items:
            log.warning("audit_spill_replayed", path=str(spill.path), items=len(self.backlog))
        else:  # all of it was committed before the crash
            await asyncio.get_running_loop().run_in_executor(self._spill_thread, spill.clear)

    async def _settle(self) -> None:
        """At close: what is still waiting fails its requests; kept items stay spilled or are lost."""
        if self.backlog.items:
            await self._spill_now()
        for item in list(self.backlog.items):
            if item.fut is not None and not item.fut.done():
                if item.state == DONE:
                    item.fut.set_result(None)
                else:
                    item.fut.set_exception(StoreClosed("store closed before the record was written"))
            if item.kept and not item.spilled and item.state != DONE:
                self.lost(item.row.get("request_id"), "the store closed before it could commit it")
        self.backlog.items.clear()
        self._spill_thread.shutdown(wait=True)

    def _write_batch(self, items: list[Item]) -> None:
        db = self._db
        if db is None:
            raise StoreClosed("store closed")
        # Failing: a short wait per retry (the writer's backoff spaces them), so reads are not held up.
        busy = min(RETRY_BUSY_SECONDS, self.busy_timeout) if self.failure else self.busy_timeout
        busy_ms = int(busy * 1000)
        if busy_ms != self._busy_ms:
            db.execute(f"PRAGMA busy_timeout = {busy_ms}")
            self._busy_ms = busy_ms
        db.execute("BEGIN IMMEDIATE")
        # The head as the store has it, read under the write lock: another process writing the same
        # file (a second gateway) extends one chain instead of forking it (fault review). One
        # indexed read per batch, not per record.
        row = db.execute("SELECT hash, seq FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        head, head_seq = (row[0], row[1]) if row else self.chain_head
        try:
            for item in items:
                record = item.row
                if item.kind == "alert":
                    db.execute(
                        "INSERT INTO alerts (time, request_id, event, severity, operator, patients, detail)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        tuple(record[k] for k in _ALERT_COLUMNS),
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
            if not self.backlog.seal(items):  # from here on no request can take its record back
                raise Withdrawn()
            try:
                db.execute("COMMIT")
            except BaseException:
                self.backlog.unseal(items)
                raise
        except BaseException:
            rollback(db)
            raise
        self.backlog.done(items)
        self.chain_head = (head, head_seq)  # only a committed record moves the head

    def _unrecorded(self, docs: list[dict[str, Any]]) -> list[Item]:
        """(Store thread.) The spilled items the store does not hold yet, in order, each once: a
        record is known by its request id, an alert by all its columns."""
        assert self._db is not None
        db, out = self._db, []
        seen: set[object] = set()
        for doc in docs:
            if doc["kind"] == "audit":
                record = doc.get("record") or {}
                rid = record.get("request_id")
                if not isinstance(rid, str):  # unusable: counted, never silently dropped (fault review)
                    self.lost(None, "a spilled record without a request id")
                elif rid not in seen:
                    seen.add(rid)
                    if not db.execute("SELECT 1 FROM audit WHERE request_id = ?", (rid,)).fetchone():
                        out.append(Item("audit", {**record, "_json": canonical(record)}))
                continue
            item = alert_item(doc.get("alert") or {"event": "?"})
            key = tuple(item.row[k] for k in _ALERT_COLUMNS)
            if key not in seen:
                seen.add(key)
                sql = (
                    "SELECT 1 FROM alerts WHERE time = ? AND request_id IS ? AND event = ? AND severity = ?"
                    " AND operator IS ? AND patients = ? AND detail = ?"
                )
                if not db.execute(sql, key).fetchone():
                    out.append(item)
        return out
