"""No disclosure without a durable record (II.2): SIGKILL the gateway under load, then every
response a client fully received has its audit record, and the chain still verifies.

A real gateway process (`emrguard serve`, tests/faults/served.py), the real FHIR dev servers, real
SQLite on disk. tests/faults/ holds the other storage faults (locked store, full disk, failing log)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.conftest import chain_ok, stored
from tests.faults.served import Served

pytestmark = pytest.mark.integration


async def test_sigkill_mid_load_loses_no_record_of_a_received_response(
    tmp_path: Path, fhir_server: Any
) -> None:
    gw = Served(tmp_path, fhir_server.base)
    gw.start()
    try:
        patient = fhir_server.patients[0]
        headers = gw.headers(fhir_server.departments[patient], "dr-crash", "durability-client")
        received: list[str] = []
        stop = time.monotonic() + 90  # a bound, not a speed: a loaded machine (HAPI, 2 cores) is slow

        async def client(session: aiohttp.ClientSession) -> None:
            while time.monotonic() < stop:
                try:
                    async with session.get(f"{gw.base}/fhir/{patient}", headers=headers) as r:
                        body = await r.read()  # fully received
                        if r.status == 200 and body:
                            received.append(r.headers["X-Request-Id"])
                except (TimeoutError, aiohttp.ClientError):
                    return  # the gateway is gone

        async def killer() -> None:
            while len(received) < 150 and time.monotonic() < stop:
                await asyncio.sleep(0.01)
            gw.kill()

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            await asyncio.gather(killer(), *(client(session) for _ in range(8)))
        assert len(received) >= 150
    finally:
        gw.stop()
    records = stored(gw.file("db"))
    missing = [rid for rid in received if rid not in records]
    assert missing == [], f"{len(missing)} responses were received without a durable audit record"
    chain_ok(gw.file("db"))  # the chain survived the crash intact
