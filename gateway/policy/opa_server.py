"""The ``opa`` engine: a real OPA server, asked over its REST Data API with one pooled session.

A plain shared-session POST was measured at ~0.59 ms per decision on loopback against ~0.72 ms for
opa-python-client's async client (which opens a session of its own), so decisions go straight to
``POST /v1/data/<path>``. OPA answers ``{}`` (no ``result``) when a rule is undefined; that is a
refusal here, like any error (fail closed).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from gateway.policy.engine import PolicyEngine, PolicyError
from gateway.policy.files import revision_of


class OpaServerEngine(PolicyEngine):
    name = "opa"

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(timeout)
        self.url = url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=60),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        try:
            await self.refresh_revision()
        except (aiohttp.ClientError, TimeoutError, PolicyError):
            pass  # OPA may start after the gateway; /readyz reports it until it answers

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def refresh_revision(self) -> str:
        """Hash the modules and data the server really holds (not what we hope it holds)."""
        assert self._session is not None
        async with self._session.get(f"{self.url}/v1/policies") as resp:
            modules_doc = orjson.loads(await resp.read())
        async with self._session.get(f"{self.url}/v1/data/emr/config") as resp:
            config_doc = orjson.loads(await resp.read())
        modules = {
            m["id"]: m["raw"]
            for m in modules_doc.get("result", [])
            if not str(m.get("id", "")).endswith("_test.rego")
        }
        self.revision = revision_of(modules, config_doc.get("result"))
        return self.revision

    async def ready(self) -> bool:
        if self._session is None:
            return False
        try:
            async with self._session.get(
                f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as r:
                ok = r.status == 200
            if ok and self.revision == "unknown":
                await self.refresh_revision()
            return ok
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        assert self._session is not None, "engine not started"
        body = orjson.dumps({"input": input_doc})
        async with self._session.post(
            f"{self.url}/v1/data/{path}", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise PolicyError(f"OPA answered {resp.status}: {payload[:300].decode(errors='replace')}")
        return orjson.loads(payload).get("result")
