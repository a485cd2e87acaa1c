"""A gateway as an operator runs it, for the tests that kill it or fill its disk: ``python -m gateway
serve`` in its own process, its own identity-provider key (a PEM file) and audit signing key, and,
where asked, some of its files on a small volume that only it sees and the test fills and frees.

The small volume is a real tmpfs, mounted in the gateway's own mount namespace (``unshare -m``; as
a user, ``unshare -rm``), so it disappears with the process and nothing is left mounted; the test
reaches its files through ``/proc/<pid>/root``. Where the machine allows no mount namespace, the
volume is a file-size limit on the gateway process instead (RLIMIT_FSIZE, set and lifted from
outside with prlimit; SIGXFSZ ignored, so a write past it fails with EFBIG as a full disk fails).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import tokens
from tests.conftest import AUDIENCE, ISSUER, POLICY_DIR, free_port, wait_http

#: How big the small volume is (the store, its WAL and a log fit; a filler takes the rest).
VOLUME_BYTES = 4 * 1024 * 1024
#: rlimit mode: files that must fail while the others keep working are padded to this size first.
PAD_BYTES = 8 * 1024 * 1024


def _unshare() -> list[str]:
    return ["unshare", "-m" if os.geteuid() == 0 else "-rm", "--propagation", "private"]


def tmpfs_allowed() -> bool:
    """Whether this machine lets the test mount a tmpfs in a private mount namespace."""
    with tempfile.TemporaryDirectory() as probe:
        try:
            done = subprocess.run(
                [*_unshare(), "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"', probe],
                capture_output=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


class Volume:
    """A small volume for some of the gateway's files, which the test fills and frees."""

    def __init__(self, where: Path, mode: str = "") -> None:
        self.where = where  # the mount point (tmpfs) or a plain folder (rlimit)
        self.mode = mode or ("tmpfs" if tmpfs_allowed() else "rlimit")
        self.pid = 0
        self.padded: list[Path] = []  # rlimit mode: the files that fail when "full"
        where.mkdir(parents=True, exist_ok=True)

    def wrap(self, cmd: list[str]) -> list[str]:
        if self.mode == "tmpfs":
            mount = f'mount -t tmpfs -o size={VOLUME_BYTES},mode=0700 tmpfs "$0" && exec "$@"'
            return [*_unshare(), "sh", "-c", mount, str(self.where), *cmd]
        ignore = "import os, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
        return [sys.executable, "-c", ignore, *cmd]

    def path(self, name: str) -> Path:
        """A file on the volume, as the test reaches it (the gateway's name for it: ``where / name``)."""
        if self.mode == "tmpfs" and self.pid:
            return Path(f"/proc/{self.pid}/root") / self.where.relative_to("/") / name
        return self.where / name

    def pad(self, name: str) -> None:
        """rlimit mode: make ``name`` (a JSON-lines log) so big that a file-size limit stops only it."""
        if self.mode == "rlimit":
            line = b'{"event":"padding"}\n'
            (self.where / name).write_bytes(line * (PAD_BYTES // len(line)))
            self.padded.append(self.where / name)

    def fill(self) -> None:
        if self.mode == "tmpfs":
            with open(self.path("filler"), "wb", buffering=0) as fh, contextlib.suppress(OSError):
                while True:  # until ENOSPC; then single bytes into the last page's slack
                    fh.write(b"\0" * 65536)
            with open(self.path("filler"), "ab", buffering=0) as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0")
            return
        limit = max((p.stat().st_size for p in self.padded), default=0)
        _, hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (limit, hard))

    def free(self) -> None:
        if self.mode == "tmpfs":
            self.path("filler").unlink()
            return
        _, hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (hard, hard))


class Served:
    """``python -m gateway serve`` on a free port in front of ``upstream``; ``settings`` are
    EMRGUARD_* variables (``db="..."`` sets EMRGUARD_DB)."""

    def __init__(self, tmp_path: Path, upstream: str, volume: Volume | None = None, **settings: Any) -> None:
        self.dir = tmp_path
        self.volume = volume
        self.key = tokens.generate_key()
        (tmp_path / "idp.pem").write_bytes(
            self.key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        signing = tmp_path / "audit-signing.pem"
        signing.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        signing.chmod(0o600)
        self.port = free_port()
        values: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "upstream_url": upstream,
            "jwt_public_key_files": str(tmp_path / "idp.pem"),
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "policy_dir": str(POLICY_DIR),
            "db": str(tmp_path / "audit.sqlite"),
            "audit_log": str(tmp_path / "audit.jsonl"),
            "audit_signing_key_file": str(signing),
            "audit_checkpoint_file": str(tmp_path / "audit-checkpoints.jsonl"),
            "pseudonym_secret": "fault-test-pseudonym-secret-0123456789",
            "watermark_secret": "fault-test-watermark-secret-0123456789",
            **settings,
        }
        self.settings = values
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EMRGUARD_")}
        self.env.update({f"EMRGUARD_{k.upper()}": str(v) for k, v in values.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "gateway", "serve"]
        # Its log lines, to read when a test fails; not a file under a file-size limit (a log line
        # that cannot be written would fail the request that logs it: structlog prints to stderr).
        limited = self.volume is not None and self.volume.mode == "rlimit"
        stderr = open(os.devnull if limited else self.dir / "gateway.stderr", "ab")
        self.proc = subprocess.Popen(
            self.volume.wrap(cmd) if self.volume else cmd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        stderr.close()
        if self.volume is not None:
            self.volume.pid = self.proc.pid  # unshare and sh exec the gateway: the same process
        wait_http(f"{self.base}/healthz", timeout=60)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
        assert self.proc is not None and self.proc.returncode == -signal.SIGKILL

    def file(self, key: str) -> Path:
        """A file setting of this gateway, as the test reaches it (on the volume, if it is there)."""
        path = Path(self.settings[key])
        if self.volume is not None and path.is_relative_to(self.volume.where):
            return self.volume.path(str(path.relative_to(self.volume.where)))
        return path

    def headers(self, patient_dept: str, sub: str, user_agent: str) -> dict[str, str]:
        token = tokens.mint(
            self.key,
            kid="idp",
            issuer=ISSUER,
            audience=AUDIENCE,
            sub=sub,
            roles=["physician"],
            dept=patient_dept,
        )
        return {"Authorization": f"Bearer {token}", "X-Purpose-Of-Use": "TREAT", "User-Agent": user_agent}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.base}/readyz", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def until_ready(self, timeout: float = 30.0) -> float:
        """Seconds until /readyz answers 200 (fails after ``timeout``)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.readyz()[0] == 200:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"not ready after {timeout} s: {self.readyz()}")

    def store(self) -> Path:
        """The store as the test can open it. On the volume, a copy of its files taken now: SQLite
        resolves ``/proc/<pid>/root`` as a symbolic link (to the test's own root), so it cannot open
        the file there itself. Taken while the gateway is idle, the copy is the store as committed."""
        path = self.file("db")
        if self.volume is None or self.volume.mode != "tmpfs":
            return path
        copy = self.dir / "store-copy"
        copy.mkdir(exist_ok=True)
        for suffix in ("", "-wal"):
            (copy / f"audit.sqlite{suffix}").unlink(missing_ok=True)
            source = Path(f"{path}{suffix}")
            if source.exists():
                (copy / f"audit.sqlite{suffix}").write_bytes(source.read_bytes())
        (copy / "audit.sqlite-shm").unlink(missing_ok=True)  # rebuilt from the WAL on open
        return copy / "audit.sqlite"

    def alerts(self, event: str) -> int:
        with contextlib.closing(sqlite3.connect(self.store())) as db:
            return int(db.execute("SELECT count(*) FROM alerts WHERE event = ?", (event,)).fetchone()[0])


@contextlib.contextmanager
def locked(db: Path | str) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the store's write lock (``BEGIN IMMEDIATE``) until the block ends."""
    hold = (
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
        "db.execute('ROLLBACK')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", hold, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
