"""The JSON-lines log follows the store (II.2): a full log volume costs no request its answer and
leaves no partial line; the log catches up from the store in order; a torn last line is cut at start.
The full volume is the kernel's own: /dev/full answers every write with ENOSPC."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.audit.log import AuditLog, LogSink
from gateway.context import RequestContext
from gateway.runtime import GATEWAY
from gateway.store import Store
from gateway.store.commit import StoreUnavailable
from tests.builders import audit_record
from tests.conftest import UNREACHABLE, auth

FULL = "/dev/full"


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_full_log_volume_lags_and_catches_up_in_order(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.sqlite"))
    await store.start()
    path = tmp_path / "audit.jsonl"
    sink = LogSink(store, str(path))
    await sink.start()
    try:
        for i in range(1, 3):
            record = audit_record(i)
            await sink.follow(await store.insert_audit(record), record, [])
        real, sink._file = sink._file, open(FULL, "ab", buffering=0)  # the volume fills up
        for i in range(3, 6):
            record = audit_record(i)
            await sink.follow(await store.insert_audit(record), record, [])
        assert sink.failures >= 1 and sink.lagging and sink.cursor == 2
        sink._file.close()
        sink._file = real  # space again
        record = audit_record(6)
        await sink.follow(await store.insert_audit(record), record, [])
        assert [line["request_id"] for line in lines(path)] == [
            audit_record(i)["request_id"] for i in range(1, 7)
        ]
        assert not sink.lagging and sink.cursor == 6
    finally:
        sink.close()
        await store.close()


async def test_a_torn_last_line_is_cut_and_the_log_resumes_after_its_last_record(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.sqlite"))
    await store.start()
    path = tmp_path / "audit.jsonl"
    try:
        for i in range(1, 5):
            await store.insert_audit(audit_record(i))
        whole = json.dumps({**audit_record(2), "event": "audit"})
        path.write_text(json.dumps({**audit_record(1), "event": "audit"}) + "\n" + whole + "\n" + whole[:40])
        sink = LogSink(store, str(path))
        await sink.start()  # a crash after record 2's line: 3 and 4 follow now, the torn line goes
        sink.close()
        assert [line["request_id"] for line in lines(path)] == [
            audit_record(i)["request_id"] for i in range(1, 5)
        ]
    finally:
        await store.close()


async def test_a_full_log_volume_is_not_a_refused_request(
    aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """Before: the record committed (a disclosure on file), then the log write failed and the client
    got 503 — the trail claimed a disclosure that never happened. Now the answer stands."""
    settings = make_settings(UNREACHABLE, audit_log=FULL)
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/admin/audit", headers=auth(idp.token("security_officer"), None))
    assert resp.status == 200
    store = client.server.app[GATEWAY].store
    assert (await store.audit_record(resp.headers["X-Request-Id"])) is not None
    assert client.server.app[GATEWAY].audit.sink.failures >= 1


def context(n: int, status: int = 200) -> RequestContext:
    ctx = RequestContext(f"rid-{n}", "GET", "Patient/p1", "", "10.0.0.1", "test", {})
    ctx.status, ctx.decision = status, "allow"
    return ctx


async def test_nothing_after_the_commit_can_fail_the_answer(tmp_path: Path) -> None:
    """The log's catch-up reads the store; if that read fails the record is committed all the same,
    so the answer stands (before: the exception reached the wrapper, which answered 503)."""
    store = Store(str(tmp_path / "a.sqlite"))
    await store.start()
    path = tmp_path / "audit.jsonl"
    trail = AuditLog(store, str(path))
    await trail.start()
    try:
        await trail.write(context(1))
        trail.sink.lagging = True  # (a write failed earlier: the next one catches up first)
        real = store.records_after

        async def broken(seq: int, limit: int) -> Any:
            raise OSError("the store thread's read failed")

        store.records_after = broken  # type: ignore[method-assign]
        assert (await trail.write(context(2)))["request_id"] == "rid-2"  # no exception: committed
        assert (await store.audit_record("rid-2")) is not None
        store.records_after = real  # type: ignore[method-assign]
        await trail.write(context(3))
        assert [line["request_id"] for line in lines(path)] == ["rid-1", "rid-2", "rid-3"]
    finally:
        await trail.close()
        await store.close()


async def test_a_kept_503_record_reaches_the_log_when_the_store_commits_it(tmp_path: Path) -> None:
    """A 503's record is kept while the store cannot commit, and nobody waits for it: its line
    follows its commit, not only the next request."""
    db = tmp_path / "a.sqlite"
    store = Store(str(db), busy_timeout=0.2)
    await store.start()
    path = tmp_path / "audit.jsonl"
    trail = AuditLog(store, str(path))
    await trail.start()
    try:
        await trail.write(context(1))
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            await trail.write(context(2))
        await trail.keep(context(2, 503))
        lock.execute("ROLLBACK")
        lock.close()
        for _ in range(500):
            if len(lines(path)) == 2:
                break
            await asyncio.sleep(0.01)
        assert [(x["request_id"], x["status"]) for x in lines(path)] == [("rid-1", 200), ("rid-2", 503)]
        assert store.records_lost == 0
    finally:
        await trail.close()
        await store.close()
