"""SIGKILL of the gateway during a batch of concurrent requests (II.2), healthy and while its store
is locked: every response a client received has its record after a restart (the 503s' from the
spill file), no request has two, no record lacks its request, and the chain verifies — with the
signed checkpoints — after a restart and a clean stop."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.store.commit import STORE_UNAVAILABLE
from tests.faults.conftest import MEDPLUM, chain_ok, measured, stored
from tests.faults.served import Served, locked

pytestmark = [pytest.mark.integration, MEDPLUM]


async def batch(
    gw: Served, patient: str, dept: str, counter: Any, sent: set[str], received: dict[str, int], enough: int
) -> None:
    """Eight clients asking until ``received`` (request id -> status) holds ``enough`` answers, or
    the gateway is gone. Each request names itself in its User-Agent (it is recorded), so every
    record can be traced to a request the test made."""

    async def client(http: aiohttp.ClientSession) -> None:
        while len(received) < enough:
            agent = f"fault-client/{next(counter)}"
            sent.add(agent)
            try:
                async with http.get(
                    f"{gw.base}/fhir/{patient}", headers=gw.headers(dept, "dr-kill", agent)
                ) as r:
                    await r.read()  # fully received
                    received[r.headers["X-Request-Id"]] = r.status
            except (TimeoutError, aiohttp.ClientError):
                return  # the gateway is gone

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        await asyncio.gather(*(client(http) for _ in range(8)))


async def test_sigkill_during_a_batch_loses_no_record_and_the_chain_verifies(
    tmp_path: Path, fhir_server: Any
) -> None:
    spill = tmp_path / "spill" / "audit-spill.jsonl"
    gw = Served(tmp_path, fhir_server.base, audit_spill_file=str(spill), store_busy_timeout_seconds=1.0)
    patient = fhir_server.patients[3]
    dept = fhir_server.departments[patient]
    counter, sent = itertools.count(), set()
    got: dict[str, int] = {}
    gw.start()
    try:
        # 1. Healthy: killed with requests in flight (a batch being committed, others waiting).
        killer = asyncio.get_running_loop().run_in_executor(None, _kill_after, gw, got, 60)
        await batch(gw, patient, dept, counter, sent, got, 10**9)
        await killer
        assert len(got) >= 60 and set(got.values()) == {200}
        gw.start()
        records = stored(gw.file("db"))
        assert {rid for rid in got} <= set(records)  # every response received has its record
        chain_ok(gw.file("db"))

        # 2. Locked: the 503s' records exist only in the backlog and the spill file — then SIGKILL.
        refused: dict[str, int] = {}
        with locked(gw.file("db")):
            await batch(gw, patient, dept, counter, sent, refused, 16)
            assert set(refused.values()) == {503}
            gw.kill()
        got.update(refused)
        start = time.monotonic()
        gw.start()  # replays the spill file into the store
        measured(
            "SIGKILL while locked: restarted with the spilled records committed after",
            time.monotonic() - start,
        )
        assert gw.readyz()[1]["records_lost"] == 0
        records = stored(gw.file("db"))
        missing = [rid for rid in got if rid not in records]
        assert missing == [], f"{len(missing)} responses were received without a durable record"
        assert all(records[rid]["status"] == 503 for rid in refused)
        agents = [r["user_agent"] for r in records.values()]
        assert len(agents) == len(set(agents)) and set(agents) <= sent  # no record without its request
        assert gw.alerts(STORE_UNAVAILABLE) == 1
        assert spill.read_bytes() == b""
        chain_ok(gw.file("db"))
    finally:
        gw.stop()  # a clean stop: the final checkpoint signs the head
    chain_ok(gw.file("db"), gw.settings["audit_checkpoint_file"], gw.settings["audit_signing_key_file"])


def _kill_after(gw: Served, received: dict[str, int], enough: int) -> None:
    deadline = time.monotonic() + 90  # a bound, not a speed: 2 shared cores are slow
    while len(received) < enough and time.monotonic() < deadline:
        time.sleep(0.01)
    gw.kill()
