"""Signed checkpoints of the audit chain's head (II.2 tamper evidence): every few seconds the head
is signed (Ed25519) into a file outside the database and into the log stream, so deleting the
newest records is detected by ``emrguard audit verify`` (gateway/audit/chain.py).

The signing key is made by ``emrguard keys init`` (:func:`create_signing_key`); ``emrguard serve``
refuses to start without one unless ``audit_checkpoints = false`` says checkpoints are deliberately
off (gateway/config.py). The same key signs the archive segments (gateway/audit/archive.py).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.aio import stop_task
from gateway.audit.chain import key_id, load_private_key, sign_checkpoint
from gateway.store import Store
from gateway.store.backlog import cut_torn_tail

#: The file names ``emrguard keys init`` writes in its directory.
SIGNING_KEY_NAME = "audit-signing.pem"
PUBLIC_KEY_NAME = "audit-signing.pub.pem"


class KeyExists(FileExistsError):
    """The signing key is there already; it is never replaced without ``--force``."""


def create_signing_key(directory: str | os.PathLike[str], force: bool = False) -> tuple[Path, Path, str]:
    """Make the audit signing key (II.2): an Ed25519 private key, PEM (PKCS#8), mode 0600, and its
    public half beside it (for whoever verifies without being able to sign). An existing key is
    never overwritten unless ``force``: a new key cannot sign for the old checkpoints and archive
    segments, which stay verifiable only with the old public key. Returns (key, public key, key id).
    """
    folder = Path(directory)
    private_path, public_path = folder / SIGNING_KEY_NAME, folder / PUBLIC_KEY_NAME
    if private_path.exists() and not force:
        raise KeyExists(f"{private_path} exists")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Written beside, then renamed: a crash leaves the old key or the new one, never half of one.
    for path, data, mode in ((private_path, pem, 0o600), (public_path, public, 0o644)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask says
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    return private_path, public_path, key_id(key.public_key())


class Checkpointer:
    """Signs the audit chain's head every few seconds into a file outside the database (II.2)."""

    def __init__(self, store: Store, key_file: str, checkpoint_file: str, interval: float, log: Any) -> None:
        self.store = store
        self.key = load_private_key(key_file)
        self.path = Path(checkpoint_file)
        self.interval = interval
        self.log = log
        self.signed_seq = -1
        #: Why the checkpoint file cannot be written ("" when it can): /readyz reports it.
        self.failing = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._loop(), name="emrguard-audit-checkpoints")

    async def close(self) -> None:
        await stop_task(self._task)
        try:
            await self.checkpoint(final=True)
        except OSError:  # the final signature is in the log stream; the rest of shutdown goes on
            self.log.error("audit_checkpoint_failed", path=str(self.path), final=True)

    async def _loop(self) -> None:
        # The first checkpoint is signed at once: after a clean shutdown's final checkpoint it says
        # the gateway is running again (records may follow), and it anchors records committed at
        # start-up (the backlog's spill file replayed). Without it a crash within the first
        # interval left records "after a final checkpoint" and a trail that fails verify.
        while True:
            try:
                await self.checkpoint()
            except OSError:
                self.log.error("audit_checkpoint_failed", path=str(self.path))
            await asyncio.sleep(self.interval)

    async def checkpoint(self, final: bool = False) -> dict[str, Any] | None:
        """Sign the chain's head; ``final`` at a clean shutdown (nothing may follow until restart)."""
        head, seq = self.store.chain_head
        if seq == 0 or (seq == self.signed_seq and not final):
            return None  # (the first call after start signs even an unchanged head: signed_seq is -1)
        cp = sign_checkpoint(
            self.key, seq, head, datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), final
        )
        line = orjson.dumps(cp) + b"\n"
        # The log stream is the second anchor: it gets the signature even when the file cannot
        # (fault review: an unwritable checkpoint file left the head signed nowhere).
        self.log.info("audit_checkpoint", **cp)
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as exc:
            self.failing = str(exc)
            raise
        self.failing = ""
        self.signed_seq = seq
        return cp

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            cut_torn_tail(fd)  # a torn last line would swallow this signature (fault review)
            if os.write(fd, line) != len(line):
                raise OSError("short write of a checkpoint")
            os.fsync(fd)
        finally:
            os.close(fd)
