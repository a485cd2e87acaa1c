"""Forwarding to a FHIR AuditEvent repository through the durable outbox (II.2): no loss across a
failing repository or a restart. The repository is a small aiohttp stand-in (it records what it
receives and can be told to fail); the store is a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from fhir.resources.R4B.auditevent import AuditEvent

from gateway.store import Store
from plugins.balp.forward import AuditForwarder
from tests.builders import audit_record as record


class Repository:
    def __init__(self) -> None:
        self.received: dict[str, dict[str, Any]] = {}
        self.fail_next = 0

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503)
        bundle = await request.json()
        for e in bundle["entry"]:
            AuditEvent.model_validate(e["resource"])
            self.received[e["resource"]["id"]] = e["resource"]
        return web.json_response(
            {
                "resourceType": "Bundle",
                "type": "batch-response",
                "entry": [{"response": {"status": "201 Created"}} for _ in bundle["entry"]],
            }
        )


async def test_forwarding_survives_failure_and_restart(tmp_path: Path, aiohttp_server: Any) -> None:
    repo = Repository()
    app = web.Application()
    app.router.add_post("/fhir", repo.handle)
    server = await aiohttp_server(app)
    url = str(server.make_url("/fhir"))
    store = Store(str(tmp_path / "a.sqlite"))
    await store.start()
    for i in range(7):
        await store.insert_audit(record(i))
    repo.fail_next = 2  # the repository is down for the first two attempts
    fwd = AuditForwarder(store, url, batch=3, interval=0.05)
    await fwd.start()
    for _ in range(200):
        if len(repo.received) == 7:
            break
        await asyncio.sleep(0.05)
    await fwd.close()
    assert sorted(repo.received) == [f"req-{i:05d}" for i in range(7)]
    # A restart: a new forwarder resumes from the stored cursor, sending only what is new.
    for i in range(7, 10):
        await store.insert_audit(record(i))
    repo.received.clear()
    fwd = AuditForwarder(store, url, batch=50, interval=0.05)
    await fwd.start()
    for _ in range(100):
        if len(repo.received) == 3:
            break
        await asyncio.sleep(0.05)
    await fwd.close()
    assert sorted(repo.received) == ["req-00007", "req-00008", "req-00009"]
    assert await store.forward_cursor(url) == 10
    await store.close()
