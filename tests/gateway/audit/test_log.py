"""The JSON-lines log follows the store (II.2): a full log volume costs no request its answer and
leaves no partial line; the log catches up from the store in order; a torn last line is cut at start.
The full volume is the kernel's own: /dev/full answers every write with ENOSPC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.audit.log import LogSink
from gateway.runtime import GATEWAY
from gateway.store import Store
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
