"""Forwarding audit records as IHE BALP AuditEvents to a FHIR AuditEvent repository (II.2, III).

The audit table itself is the durable outbox: a cursor per destination (``audit_forward``) says up
to which record the destination has confirmed receipt. A batch is sent as a FHIR ``batch`` Bundle of
AuditEvents; the cursor moves only when every entry was accepted, so a crash or an unreachable
repository loses nothing (records are sent again — the AuditEvent id is the request id, so a
repository that upserts by id sees no duplicates). Failures back off exponentially up to a minute.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import structlog

from gateway.aio import stop_task
from gateway.store import Store
from plugins.balp.event import to_audit_event

log = structlog.get_logger("emrguard.balp.forward")


class AuditForwarder:
    def __init__(
        self, store: Store, url: str, authorization: str = "", batch: int = 100, interval: float = 2.0
    ) -> None:
        self.store = store
        self.url = url.rstrip("/")
        self.authorization = authorization
        self.batch = batch
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._task = asyncio.create_task(self._loop(), name="emrguard-audit-forward")

    async def close(self) -> None:
        await stop_task(self._task)
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        backoff = self.interval
        while True:
            try:
                sent = await self.forward_once()
                backoff = self.interval
                if sent == self.batch:
                    continue  # more waiting: no pause
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the outbox outlives any failure, a locked store too
                # (sqlite3.OperationalError from the cursor update ended the task for good before).
                log.warning("audit_forward_failed", destination=self.url, error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            await asyncio.sleep(self.interval)

    async def forward_once(self) -> int:
        """Send the next batch; return how many records were delivered."""
        assert self._session is not None
        cursor = await self.store.forward_cursor(self.url)
        records = await self.store.records_after(cursor, self.batch)
        if not records:
            return 0
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": to_audit_event(r),
                    "request": {"method": "PUT", "url": f"AuditEvent/{r['request_id']}"},
                }
                for _, r in records
            ],
        }
        headers = {"Content-Type": "application/fhir+json"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        async with self._session.post(self.url, data=orjson.dumps(bundle), headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise ValueError(f"repository answered {resp.status}")
        answer = orjson.loads(body)
        statuses = [
            str(((e or {}).get("response") or {}).get("status", "")) for e in answer.get("entry") or []
        ]
        if len(statuses) != len(records) or not all(s[:1] == "2" for s in statuses):
            raise ValueError(f"repository refused entries: {statuses[:5]}")
        await self.store.set_forward_cursor(self.url, records[-1][0])
        self.delivered += len(records)
        return len(records)
