"""No disclosure without a durable record (II.2): SIGKILL the gateway under load, then every
response a client fully received has its audit record, and the chain still verifies.

A real gateway process (`emrguard serve`), the real FHIR dev server, real SQLite on disk."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from devtools import tokens
from gateway.audit.chain import verify
from tests.conftest import AUDIENCE, ISSUER, POLICY_DIR, free_port, wait_http

pytestmark = pytest.mark.integration


async def test_sigkill_mid_load_loses_no_record_of_a_received_response(
    tmp_path: Path, fhir_server: Any
) -> None:
    key = tokens.generate_key()
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    port = free_port()
    db = tmp_path / "audit.sqlite"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EMRGUARD_")},
        "EMRGUARD_LISTEN": f"127.0.0.1:{port}",
        "EMRGUARD_UPSTREAM_URL": fhir_server.base,
        "EMRGUARD_JWT_PUBLIC_KEY_FILES": str(pem),
        "EMRGUARD_ISSUER": ISSUER,
        "EMRGUARD_AUDIENCE": AUDIENCE,
        "EMRGUARD_POLICY_DIR": str(POLICY_DIR),
        "EMRGUARD_DB": str(db),
        "EMRGUARD_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "EMRGUARD_PSEUDONYM_SECRET": "crash-test-pseudonym-secret-0123456789",
        "EMRGUARD_WATERMARK_SECRET": "crash-test-watermark-secret-0123456789",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        patient = fhir_server.patients[0]
        token = tokens.mint(
            key,
            kid="idp",
            issuer=ISSUER,
            audience=AUDIENCE,
            sub="dr-crash",
            roles=["physician"],
            dept=fhir_server.departments[patient],
        )
        headers = {"Authorization": f"Bearer {token}", "X-Purpose-Of-Use": "TREAT"}
        received: list[str] = []
        stop = time.monotonic() + 90  # a bound, not a speed: a loaded machine (HAPI, 2 cores) is slow

        async def client(session: aiohttp.ClientSession) -> None:
            while time.monotonic() < stop:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/fhir/{patient}", headers=headers) as r:
                        body = await r.read()  # fully received
                        if r.status == 200 and body:
                            received.append(r.headers["X-Request-Id"])
                except (TimeoutError, aiohttp.ClientError):
                    return  # the gateway is gone

        async def killer() -> None:
            while len(received) < 150 and time.monotonic() < stop:
                await asyncio.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            await asyncio.gather(killer(), *(client(session) for _ in range(8)))
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        assert len(received) >= 150
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT request_id FROM audit")}
    missing = [rid for rid in received if rid not in stored]
    assert missing == [], f"{len(missing)} responses were received without a durable audit record"
    assert verify(db).ok  # the chain survived the crash intact
