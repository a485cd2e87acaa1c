"""The audit backlog (II.2 traceability, II.3 alerts): every record and alert the store has accepted
and not yet committed, in order, bounded — so a store that cannot commit (locked by another
process, a full disk) costs requests their answers (503), never their records.

The backlog is the group-commit queue itself: the writer (gateway/store/db.py) commits its oldest
items and removes them only once their transaction is on disk, so order (and the hash chain, whose
head moves only on commit) is the order of arrival. A request waits a bounded time for its record;
then it *withdraws* it (its answer becomes a 503, and the 503's own record is kept in its place).
Withdrawing and committing exclude each other: the store thread *seals* a batch just before COMMIT,
and a sealed record can no longer be withdrawn — its request waits for the commit's outcome.

Kept items (a 503's record, an alert: nobody will withdraw them) are also written to the spill file
(``audit_spill_file``, meant for another volume) while the store cannot commit, one whole JSON line
each, fsynced, so a crash during an outage loses none of them: at start-up the spilled items the
store lacks are committed (a record is known by its request id, an alert by all its fields).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger("emrguard.store")

#: An item's life: queued, sealed into a transaction being committed, withdrawn by its request, done.
QUEUED, SEALED, WITHDRAWN, DONE = range(4)


@dataclass(eq=False)
class Item:
    """One record or alert waiting for its commit."""

    kind: str  # "audit" | "alert"
    #: What the store inserts: the record with its canonical JSON ("_json"), or the alert's columns.
    row: dict[str, Any]
    #: Resolved on commit for the request that waits; None for a kept item (nobody waits).
    fut: asyncio.Future[None] | None = None
    state: int = QUEUED
    spilled: bool = False

    @property
    def kept(self) -> bool:
        """No request can withdraw it any more: it must reach the store, whatever happens."""
        return self.kind == "alert" or self.fut is None

    def spill_line(self) -> bytes:
        if self.kind == "audit":
            return b'{"kind":"audit","record":' + self.row["_json"] + b"}\n"
        alert = {k: self.row[k] for k in ("time", "request_id", "event", "severity", "operator")}
        alert["patients"] = orjson.loads(self.row["_patients"])
        alert["detail"] = orjson.loads(self.row["_detail"])
        return orjson.dumps({"kind": "alert", "alert": alert}) + b"\n"


class Withdrawn(Exception):
    """A batch lost an item to its request before COMMIT: rolled back, to be formed again."""


class Backlog:
    """The ordered, bounded queue of items not yet committed (only the event loop changes it)."""

    def __init__(self, limit: int, spill_path: str = "") -> None:
        #: No request is admitted while this many items wait (or are reserved by requests running).
        self.limit = limit
        self.items: deque[Item] = deque()
        #: Requests admitted whose record is not in the queue yet: each is promised a place.
        self.admitted = 0
        self.spill = Spill(spill_path) if spill_path else None
        self._lock = threading.Lock()  # withdraw (event loop) against seal (store thread)

    def __len__(self) -> int:
        return len(self.items)

    def admit(self) -> bool:
        """Promise a place to one more request's record; False when the backlog is full."""
        if len(self.items) + self.admitted >= self.limit:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted = max(0, self.admitted - 1)

    def has_room(self) -> bool:
        """Room for one more item. The refusals of a full backlog are kept too (as many again): a
        refused request has its record like any other; beyond that a record is lost (and counted)."""
        return len(self.items) < 2 * self.limit

    def append(self, item: Item) -> None:
        self.items.append(item)

    def batch(self, n: int) -> list[Item]:
        return list(islice(self.items, n))

    def withdraw(self, item: Item) -> bool:
        """Take a record back before it is committed; False once its commit is under way or done."""
        with self._lock:
            if item.state != QUEUED:
                return False
            item.state = WITHDRAWN
        self.items.remove(item)
        return True

    def seal(self, batch: list[Item]) -> bool:
        """(Store thread, just before COMMIT.) False if a request withdrew an item of the batch."""
        with self._lock:
            if any(item.state != QUEUED for item in batch):
                return False
            for item in batch:
                item.state = SEALED
            return True

    def unseal(self, batch: list[Item]) -> None:
        """(Store thread.) The COMMIT failed: the items wait again and may still be withdrawn."""
        with self._lock:
            for item in batch:
                if item.state == SEALED:
                    item.state = QUEUED

    def done(self, batch: list[Item]) -> None:
        with self._lock:
            for item in batch:
                item.state = DONE

    def discard(self, batch: list[Item]) -> None:
        """Remove items that are committed (or that can never be): the batch is the queue's head."""
        for item in batch:
            if self.items and self.items[0] is item:
                self.items.popleft()
            elif item in self.items:
                self.items.remove(item)

    def unspilled(self) -> list[Item]:
        """Kept items not yet in the spill file, marked as spilled (the caller writes them)."""
        if self.spill is None:
            return []
        out = [item for item in self.items if item.kept and not item.spilled]
        for item in out:
            item.spilled = True
        return out

    def spilled_waiting(self) -> bool:
        return any(item.spilled for item in self.items)


def cut_torn_tail(fd: int) -> int:
    """Cut a JSON-lines file (open for reading and writing) back to its last whole line; the bytes
    cut. A crash mid-write leaves a fragment, and a line appended onto it would be unreadable too
    (fault review: a spill file's alert, a checkpoint file's next signature)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    end = size
    while end > 0:
        step = min(4096, end)
        chunk = os.pread(fd, step, end - step)
        if end == size and chunk.endswith(b"\n"):
            return 0
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = end - step + cut + 1
            break
        end -= step
    os.ftruncate(fd, end)
    return size - end


class Spill:
    """The spill file: whole JSON lines, appended and fsynced, cleared once all are committed."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        #: Whether the file may hold lines (so an empty one is not rewritten after every commit).
        self.dirty = self.path.exists() and self.path.stat().st_size > 0

    def append(self, lines: list[bytes]) -> None:
        """Write ``lines`` whole (one write), fsync; on failure cut back so no torn line remains."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(lines)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)  # records name patients
        try:
            cut_torn_tail(fd)  # a crash mid-line left a fragment: the next line must not join it
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                raise
            self.dirty = True
        finally:
            os.close(fd)

    def clear(self) -> None:
        if not self.dirty:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.dirty = False

    def read(self) -> list[dict[str, Any]]:
        """The spilled items, in order; a line cut by a crash is skipped (its item was never kept)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_bytes().splitlines():
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("audit_spill_line_unreadable", path=str(self.path), bytes=len(line))
                continue
            if isinstance(doc, dict) and doc.get("kind") in ("audit", "alert"):
                out.append(doc)
        return out
