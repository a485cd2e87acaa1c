"""The log sink fails, the store does not (II.2: the store is the system of record, the log follows
it). A committed record's answer stands — the client gets its 200 and its data, never a 503 for a
log line; the log lags without a partial line and catches up, in order, each record once, when its
volume has space again. A real gateway process with its log on a small volume only it sees."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.faults.conftest import MEDPLUM, chain_ok, measured, stored
from tests.faults.served import Served, Volume

pytestmark = [pytest.mark.integration, MEDPLUM]


def log_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a partial line was left in the log"
    return [orjson.loads(line) for line in data.splitlines()]  # every line whole


async def test_a_failing_log_changes_no_answer_and_catches_up(tmp_path: Path, fhir_server: Any) -> None:
    volume = Volume(tmp_path / "log-volume")
    volume.pad("audit.jsonl")  # (file-size-limit mode only: the limit then stops the log alone)
    gw = Served(tmp_path, fhir_server.base, volume, audit_log=str(volume.where / "audit.jsonl"))
    gw.start()
    try:
        patient = fhir_server.patients[2]
        dept = fhir_server.departments[patient]
        sent: list[str] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def get(n: int) -> tuple[int, dict[str, Any], str]:
                headers = gw.headers(dept, "dr-log", f"fault-client/{n}")
                async with http.get(f"{gw.base}/fhir/{patient}", headers=headers) as r:
                    return r.status, orjson.loads(await r.read()), r.headers["X-Request-Id"]

            status, body, rid = await get(0)
            assert status == 200
            sent.append(rid)

            volume.fill()
            answers = await asyncio.gather(*(get(n) for n in range(1, 7)))
            for status, body, rid in answers:
                # Committed, so released: a log that cannot be written changes no answer.
                assert status == 200 and f"Patient/{body['id']}" == patient
                sent.append(rid)
            assert gw.readyz()[0] == 200  # the store can commit: the gateway is ready
            records = stored(gw.file("db"))
            assert list(records) == sent[:1] + sorted(sent[1:], key=list(records).index)
            assert all(r["status"] == 200 and r["patients_disclosed"] == [patient] for r in records.values())
            logged = [x["request_id"] for x in log_lines(gw.file("audit_log")) if x.get("event") == "audit"]
            # Behind the store (what fitted into the file's last page went in), in order, nothing torn.
            assert len(logged) < len(records) and logged == list(records)[: len(logged)]

            volume.free()
            start = time.monotonic()
            status, _, rid = await get(7)  # the next record's line comes after the missing ones
            assert status == 200
            sent.append(rid)
            logged = [x["request_id"] for x in log_lines(gw.file("audit_log")) if x.get("event") == "audit"]
            measured(
                "failing log: caught up, once space returned, by the next request after",
                time.monotonic() - start,
            )
            assert logged == list(stored(gw.file("db")))  # every record once, in the store's order
            assert set(logged) == set(sent)
            chain_ok(gw.file("db"))
            assert gw.readyz()[1]["records_lost"] == 0
    finally:
        gw.stop()
