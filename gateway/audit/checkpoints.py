"""Signed checkpoints of the audit chain's head (II.2 tamper evidence): every few seconds the head
is signed (Ed25519) into a file outside the database and into the log stream, so deleting the
newest records is detected by ``emrguard audit verify`` (gateway/audit/chain.py).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.aio import stop_task
from gateway.audit.chain import load_private_key, sign_checkpoint
from gateway.store import Store


class Checkpointer:
    """Signs the audit chain's head every few seconds into a file outside the database (II.2)."""

    def __init__(self, store: Store, key_file: str, checkpoint_file: str, interval: float, log: Any) -> None:
        self.store = store
        self.key = load_private_key(key_file)
        self.path = Path(checkpoint_file)
        self.interval = interval
        self.log = log
        self.signed_seq = -1
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._loop(), name="emrguard-audit-checkpoints")

    async def close(self) -> None:
        await stop_task(self._task)
        await self.checkpoint(final=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.checkpoint()
            except OSError:
                self.log.error("audit_checkpoint_failed", path=str(self.path))

    async def checkpoint(self, final: bool = False) -> dict[str, Any] | None:
        """Sign the chain's head; ``final`` at a clean shutdown (nothing may follow until restart)."""
        head, seq = self.store.chain_head
        if seq == 0 or (seq == self.signed_seq and not final):
            return None
        cp = sign_checkpoint(
            self.key, seq, head, datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), final
        )
        line = orjson.dumps(cp) + b"\n"
        await asyncio.to_thread(self._append, line)
        self.signed_seq = seq
        self.log.info("audit_checkpoint", **cp)
        return cp

    def _append(self, line: bytes) -> None:
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
