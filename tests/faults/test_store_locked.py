"""A store locked by another process (a real second process holding ``BEGIN IMMEDIATE``), II.2:
each request waits at most the busy timeout and gets 503 with no data; its 503 record waits in the
backlog (and the spill file) and is committed, once, when the lock is released; /readyz names the
store meanwhile; the outage is alerted once (II.3); a full backlog refuses before fetching anything."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from gateway.app import create_app
from gateway.runtime import GATEWAY
from gateway.store.commit import STORE_UNAVAILABLE
from tests.conftest import SEC, RecordingUpstream, auth
from tests.faults.conftest import MEDPLUM, chain_ok, measured, no_patient_data, stored
from tests.faults.served import locked
from tests.gateway.test_pipeline import NO_UPSTREAM_LOOKUPS

pytestmark = pytest.mark.integration

BUSY = 1.0  # store_busy_timeout_seconds in these tests


@MEDPLUM
async def test_a_locked_store_answers_503_keeps_every_record_and_recovers(
    aiohttp_client: Any, make_settings: Any, idp: Any, fhir_server: Any, tmp_path: Path
) -> None:
    spill = tmp_path / "spill" / "audit-spill.jsonl"  # (another volume in production)
    settings = make_settings(fhir_server.base, store_busy_timeout_seconds=BUSY, audit_spill_file=str(spill))
    client = await aiohttp_client(create_app(settings))
    gw = client.server.app[GATEWAY]
    patient = fhir_server.patients[0]
    reader = auth(idp.token("physician", sub="dr-lock", dept=fhir_server.departments[patient]))
    officer = auth(idp.token(**SEC), None)

    first = await client.get(f"/fhir/{patient}", headers=reader)
    assert first.status == 200
    family = (await first.json())["name"][0]["family"]
    sent = {first.headers["X-Request-Id"]: 200}

    with structlog.testing.capture_logs() as logs, locked(settings.db):
        start = time.monotonic()
        answers = await asyncio.gather(
            *(client.get(f"/fhir/{patient}", headers=reader) for _ in range(5)),
            client.get("/admin/audit", headers=officer),
        )
        waited = time.monotonic() - start
        for resp in answers:
            assert resp.status == 503
            no_patient_data(await resp.text(), family, patient.split("/")[1])
            sent[resp.headers["X-Request-Id"]] = 503
        assert waited < 15  # bounded (BUSY + a margin on a loaded machine), never the whole lock
        measured("locked store: 6 concurrent requests answered 503 after", waited)
        ready = await client.get("/readyz")
        health = await ready.json()
        assert ready.status == 503 and health["store"] == "cannot commit: database is locked"
        assert health["backlog"] >= 6 and health["records_lost"] == 0
        # The 503s' records are durable elsewhere already, whole lines.
        spilled = [orjson.loads(line) for line in spill.read_bytes().splitlines()]
        assert {d["record"]["request_id"] for d in spilled if d["kind"] == "audit"} == {
            rid for rid, status in sent.items() if status == 503
        }
        released = time.monotonic()
    # One outage, one alert line now (and one stored alert below), not one per request.
    assert [e["log_level"] for e in logs if e["event"] == STORE_UNAVAILABLE] == ["error"]

    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() - released < 15
        await asyncio.sleep(0.05)
    measured("locked store: ready again after the lock was released", time.monotonic() - released)
    assert gw.store.health() == {"store": "ok", "backlog": 0, "records_lost": 0}

    records = stored(settings.db)
    assert set(records) == set(sent)  # every request has exactly one record, and nothing else is there
    for rid, status in sent.items():
        assert records[rid]["status"] == status
        if status == 503:
            assert records[rid]["patients_disclosed"] == [] and records[rid]["resources_disclosed"] == []
            assert records[rid]["reasons"][0]["rule"] == "audit.unavailable"
            assert records[rid]["extra"]["withheld_status"] == 200  # what would have been answered
    assert [a["event"] for a in await gw.store.list_alerts()] == [STORE_UNAVAILABLE]
    chain_ok(settings.db, settings.audit_checkpoint_file or None, settings.audit_signing_key_file or None)
    assert spill.read_bytes() == b""  # all of it committed: the spill file is empty again
    after = await client.get(f"/fhir/{patient}", headers=reader)
    assert after.status == 200 and gw.store.records_lost == 0


async def test_a_full_backlog_refuses_before_anything_is_fetched(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """A stand-in upstream, because the point is what reaches the upstream: nothing, once the backlog
    is full (the refusals are recorded too, and committed after the lock is gone)."""
    recording.reply = {"resourceType": "Patient", "id": "p1", "name": [{"family": "王"}]}
    settings = make_settings(
        recording.base, plugins=NO_UPSTREAM_LOOKUPS, store_busy_timeout_seconds=0.5, audit_backlog_max=4
    )
    client = await aiohttp_client(create_app(settings))
    gw = client.server.app[GATEWAY]
    headers = auth(idp.token("records_officer"), "HOPERAT")
    sent: list[str] = []
    with locked(settings.db):
        waited = await asyncio.gather(*(client.get("/fhir/Patient/p1", headers=headers) for _ in range(3)))
        assert [r.status for r in waited] == [503] * 3 and len(recording.urls) == 3
        while gw.store.failure is None:  # (the writer's own attempt ends with the busy timeout too)
            await asyncio.sleep(0.01)
        assert len(gw.store.backlog) == 4  # three 503 records and the outage's alert: full
        start = time.monotonic()
        refused = [await client.get("/fhir/Patient/p1", headers=headers) for _ in range(2)]
        assert [r.status for r in refused] == [503] * 2 and len(recording.urls) == 3  # nothing fetched
        measured("full backlog: 2 requests refused, one after the other, in", time.monotonic() - start)
        for resp in waited + refused:
            assert "王" not in await resp.text()
            sent.append(resp.headers["X-Request-Id"])
    while gw.store.backlog.items:
        await asyncio.sleep(0.02)
    records = stored(settings.db)
    assert set(records) == set(sent) and all(r["status"] == 503 for r in records.values())
    assert all("withheld_status" not in records[rid].get("extra", {}) for rid in sent[3:])
    assert gw.store.records_lost == 0
    chain_ok(settings.db)
