"""Shared by the hostile suites: a gateway with each engine in front of each real upstream."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.app import create_app


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
