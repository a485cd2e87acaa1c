"""A full disk under the store and its log (II.2): the client gets 503 and no data, and the record of
that 503 is not lost — it is in the spill file on another volume at once, and in the store as soon as
space returns; /readyz names the store meanwhile; the log catches up with whole lines.

A real gateway process with its store and log on a small tmpfs that only it sees (its own mount
namespace), filled by the test; where the machine allows no mount namespace, a file-size limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.store.commit import STORE_UNAVAILABLE
from tests.faults.conftest import MEDPLUM, chain_ok, measured, no_patient_data, stored
from tests.faults.served import Served, Volume

pytestmark = [pytest.mark.integration, MEDPLUM]


async def test_a_full_disk_withholds_data_keeps_the_503s_records_and_recovers(
    tmp_path: Path, fhir_server: Any
) -> None:
    volume = Volume(tmp_path / "small-volume")
    spill = tmp_path / "spill" / "audit-spill.jsonl"  # another volume
    gw = Served(
        tmp_path,
        fhir_server.base,
        volume,
        db=str(volume.where / "audit.sqlite"),
        audit_log=str(volume.where / "audit.jsonl"),
        audit_spill_file=str(spill),
        store_busy_timeout_seconds=1.0,
    )
    gw.start()
    try:
        patient = fhir_server.patients[1]
        dept = fhir_server.departments[patient]
        sent: dict[str, int] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def get(n: int) -> tuple[int, str, str]:
                headers = gw.headers(dept, "dr-full", f"fault-client/{n}")
                async with http.get(f"{gw.base}/fhir/{patient}", headers=headers) as r:
                    return r.status, await r.text(), r.headers["X-Request-Id"]

            status, body, rid = await get(0)
            assert status == 200
            family = orjson.loads(body)["name"][0]["family"]
            sent[rid] = 200

            volume.fill()
            start = time.monotonic()
            answers = await asyncio.gather(*(get(n) for n in range(1, 7)))
            measured(
                f"full disk ({volume.mode}): 6 concurrent requests answered 503 after",
                time.monotonic() - start,
            )
            for status, body, rid in answers:
                assert status == 503
                no_patient_data(body, family, patient.split("/")[1])
                sent[rid] = 503
            code, health = gw.readyz()
            assert code == 503 and health["store"].startswith("cannot commit: ")
            assert health["backlog"] >= 6 and health["records_lost"] == 0
            if volume.mode == "tmpfs":  # (a file-size limit stops the spill file too)
                assert health["store"] == "cannot commit: database or disk is full"
                spilled = {
                    orjson.loads(x)["record"]["request_id"]
                    for x in spill.read_bytes().splitlines()
                    if b'"audit"' in x[:20]
                }
                assert spilled == {rid for rid, s in sent.items() if s == 503}

            volume.free()
            recovery = gw.until_ready()
            measured(f"full disk ({volume.mode}): ready again after space returned", recovery)
            code, health = gw.readyz()
            assert health["backlog"] == 0 and health["records_lost"] == 0

            records = stored(gw.store())
            assert set(records) == set(sent)  # each request once; no record without its request
            assert {rid: r["status"] for rid, r in records.items()} == sent
            assert all(r["patients_disclosed"] == [] for r in records.values() if r["status"] == 503)
            assert gw.alerts(STORE_UNAVAILABLE) == 1
            chain_ok(gw.store(), gw.settings["audit_checkpoint_file"], gw.settings["audit_signing_key_file"])

            # The log (on the same full volume) follows the store: whole lines, in order, each once.
            deadline = time.monotonic() + 10
            while True:
                lines = [orjson.loads(x) for x in gw.file("audit_log").read_bytes().splitlines()]
                logged = [x["request_id"] for x in lines if x.get("event") == "audit"]
                if len(logged) == len(records) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert logged == list(records)
            measured("full disk: the log had caught up after", recovery + (time.monotonic() - deadline + 10))
    finally:
        gw.stop()
