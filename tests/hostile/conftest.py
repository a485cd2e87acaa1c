"""Shared by the hostile suites: a gateway with each engine in front of each real upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import AUDIENCE, ISSUER, POLICY_DIR


async def stored(fhir_server: Any, resource: dict[str, Any]) -> dict[str, Any]:
    """Written straight to the FHIR server (set-up, not through the gateway)."""
    async with aiohttp.ClientSession() as s:
        body = {k: v for k, v in resource.items() if k != "id"}
        async with s.post(f"{fhir_server.base}/{resource['resourceType']}", json=body) as r:
            assert r.status == 201, await r.text()
            return await r.json(content_type=None)


@pytest.fixture(params=["embedded", "opa"])
async def client(
    request: pytest.FixtureRequest, aiohttp_client: Any, make_settings: Any, fhir_server: Any
) -> Any:
    opa_url = request.getfixturevalue("opa_server").url if request.param == "opa" else ""
    settings = make_settings(fhir_server.base, request.param, opa_url)
    c = await aiohttp_client(create_app(settings))
    c.settings = settings
    return c


# --- a gateway shared by a module's attempts (the insider corpus, the red teams) -----------------


@dataclass
class Gw:
    client: TestClient
    settings: Settings
    engine: str
    tokens: dict[str, str]
    offset: int = 0

    @property
    def origin(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    def records(self) -> list[dict[str, Any]]:
        """The audit records written since the last call."""
        with open(self.settings.audit_log, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        return [r for r in lines if r.get("event") == "audit"]


@asynccontextmanager
async def sealed_world_gateway(
    *,
    upstream: str,
    engine: str,
    opa_url: str,
    tmp: Path,
    idp: Any,
    pseudonym_secret: str,
    tokens: dict[str, str],
    sealed: str,
    seal_reason: str,
    case_ref: str,
    officer_sub: str,
) -> AsyncIterator[Gw]:
    """A real gateway in front of ``upstream``, with ``sealed`` sealed by a records officer through
    /admin/seals (as a hospital would), for a module's many attempts."""
    settings = Settings(
        upstream_url=upstream,
        jwks_url=idp.url,
        issuer=ISSUER,
        audience=AUDIENCE,
        policy_engine=engine,
        opa_url=opa_url,
        policy_dir=str(POLICY_DIR),
        db=str(tmp / "emrguard.sqlite"),
        audit_log=str(tmp / "audit.jsonl"),
        pseudonym_secret=pseudonym_secret,
        watermark_secret="test-watermark-secret-0123456789-abcdef",
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        officer = idp.token("records_officer", sub=officer_sub)
        resp = await client.post(
            "/admin/seals",
            json={"patient": sealed, "reason": seal_reason, "case_ref": case_ref},
            headers={"Authorization": f"Bearer {officer}"},
        )
        assert resp.status == 201, await resp.text()
        g = Gw(client, settings, engine, tokens)
        g.records()
        yield g
    finally:
        await client.close()
