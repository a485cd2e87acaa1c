"""Real parts for the tests: an OPA server built from the Go module proxy, the Medplum FHIR R4
dev server (devserver/) seeded with synthetic patients, and an identity provider whose JWKS is
served over real HTTP. Nothing here is a mock; where a test needs a stand-in it says so itself.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from devtools import tokens
from devtools.procs import free_port, wait_http
from gateway.app import create_app
from gateway.config import Settings

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "opa_policies"
ISSUER = "https://idp.test.emrguard/realms/hospital"
AUDIENCE = "emrguard"


def require(condition: bool, what: str) -> None:
    """A missing real component is a failure, never a silent skip — in CI and on a laptop alike
    (`make test` installs and builds every one of them)."""
    if not condition:
        pytest.fail(f"{what} is required: run the tests through `make test`, which sets it up")


# --- OPA --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def opa_bin() -> str:
    path = os.environ.get("EMRGUARD_OPA_BIN") or ""
    if not path:
        try:
            path = subprocess.run(
                [str(ROOT / "scripts/ensure-opa.sh")], check=True, capture_output=True, text=True
            ).stdout.strip()
        except (subprocess.CalledProcessError, OSError):
            path = ""
    require(bool(path) and os.access(path, os.X_OK), "the OPA binary (scripts/ensure-opa.sh)")
    return path


@dataclass
class OpaServer:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def opa_server(opa_bin: str) -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [opa_bin, "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error", str(POLICY_DIR)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health")
        yield OpaServer(url, proc)
    finally:
        proc.terminate()
        proc.wait(10)


# --- FHIR server --------------------------------------------------------------------------------


@dataclass
class FhirServer:
    kind: str  # medplum | hapi
    base: str
    process: subprocess.Popen[str]
    patients: list[str] = field(default_factory=list)  # "Patient/<id>", in synthetic index order
    departments: dict[str, str] = field(default_factory=dict)  # "Patient/<id>" -> department treating them


#: The real FHIR servers the integration and hostile tests run against (docs/UPSTREAMS.md).
UPSTREAMS = ("medplum", "hapi")


def _medplum() -> subprocess.Popen[str]:
    node = shutil.which("node")
    require(
        node is not None and (ROOT / "devserver/node_modules").is_dir(),
        "node and devserver/node_modules (make setup)",
    )
    return subprocess.Popen(
        [str(node), str(ROOT / "devserver/fhir-server.mjs"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _hapi() -> subprocess.Popen[str]:
    """HAPI FHIR JPA (devserver/hapi), built once and cached by scripts/ensure-hapi.sh."""
    jar = os.environ.get("EMRGUARD_HAPI_JAR") or ""
    if not jar:
        try:
            jar = subprocess.run(
                [str(ROOT / "scripts/ensure-hapi.sh")], check=True, capture_output=True, text=True
            ).stdout.strip()
        except (subprocess.CalledProcessError, OSError):
            jar = ""
    java = shutil.which("java")
    require(
        bool(jar) and Path(jar).is_file() and java is not None,
        "java and the HAPI jar (scripts/ensure-hapi.sh)",
    )
    return subprocess.Popen(
        [str(java), "-Xmx512m", "-XX:+UseSerialGC", "-jar", jar, "--server.port=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


_STARTING: dict[str, subprocess.Popen[str]] = {}


def launch(kind: str) -> None:
    """Start a FHIR server in the background (HAPI takes ~30 s: started as the session begins)."""
    if kind not in _STARTING:
        _STARTING[kind] = _hapi() if kind == "hapi" else _medplum()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start HAPI early, only if a selected test will use it."""
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("fhir_server") == "hapi":
            launch("hapi")
            return


def pytest_sessionfinish(session: pytest.Session) -> None:
    """No FHIR server outlives the run (one launched but never used is stopped here)."""
    for proc in _STARTING.values():
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    _STARTING.clear()


def _ready(kind: str) -> FhirServer:
    launch(kind)
    proc = _STARTING[kind]
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server's one line once it serves
    if "ready on" not in line:
        proc.kill()
        raise RuntimeError(f"{kind} FHIR server did not start: {line!r}")
    return FhirServer(kind, line.strip().rsplit(" ", 1)[-1], proc)


@pytest.fixture(scope="session", params=UPSTREAMS)
def fhir_server(request: pytest.FixtureRequest) -> Any:
    """Each real upstream in turn, seeded with the same synthetic patients."""
    server = _ready(request.param)
    try:
        from devtools.synthetic import department_for, seed_server

        ids = asyncio.run(seed_server(server.base, count=12, seed=262))
        server.patients = [i if i.startswith("Patient/") else f"Patient/{i}" for i in ids]
        server.departments = {p: department_for(i, 262) for i, p in enumerate(server.patients)}
        yield server
    finally:
        server.process.terminate()
        server.process.wait(30)
        _STARTING.pop(request.param, None)


# --- identity provider ----------------------------------------------------------------------------


class IdentityProvider:
    """A signing key whose public half is served as a JWKS over real HTTP, counting fetches."""

    def __init__(self) -> None:
        self.key = tokens.generate_key()
        self.kid = "test-key-1"
        self.jwks: dict[str, Any] = {"keys": [tokens.public_jwk(self.key, self.kid)]}
        self.fetches = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.fetches += 1
                body = json.dumps(idp.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = (
            f"http://127.0.0.1:{self.server.server_address[1]}/realms/hospital/protocol/openid-connect/certs"
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, roles: list[str] | str = "physician", sub: str = "u-physician-001", **kw: Any) -> str:
        kw.setdefault("kid", self.kid)
        kw.setdefault("issuer", ISSUER)
        kw.setdefault("audience", AUDIENCE)
        return tokens.mint(self.key, sub=sub, roles=[roles] if isinstance(roles, str) else roles, **kw)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def idp() -> Any:
    provider = IdentityProvider()
    yield provider
    provider.close()


def auth(token: str, purpose: str | None = "TREAT", **headers: str) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}", **headers}
    if purpose:
        out["X-Purpose-Of-Use"] = purpose
    return out


# --- gateway ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def audit_signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audit signing key of every test gateway, made once per session as `emrguard keys init`
    makes it: test apps run with real signed checkpoints, as `emrguard serve` must (II.2)."""
    from gateway.audit.checkpoints import create_signing_key

    private, _, _ = create_signing_key(tmp_path_factory.mktemp("audit-keys"))
    return private


@pytest.fixture
def make_settings(tmp_path: Path, idp: IdentityProvider, audit_signing_key: Path) -> Any:
    def build(upstream_url: str, engine: str = "embedded", opa_url: str = "", **overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            upstream_url=upstream_url,
            jwks_url=idp.url,
            issuer=ISSUER,
            audience=AUDIENCE,
            policy_engine=engine,
            opa_url=opa_url,
            policy_dir=str(POLICY_DIR),
            db=str(tmp_path / "emrguard.sqlite"),
            audit_log=str(tmp_path / "audit.jsonl"),
            pseudonym_secret="test-pseudonym-secret-0123456789-abcdef",
            watermark_secret="test-watermark-secret-0123456789-abcdef",
            audit_signing_key_file=str(audit_signing_key),
            audit_checkpoint_file=str(tmp_path / "audit-checkpoints.jsonl"),
        )
        values.update(overrides)
        return Settings(**values)

    return build


def read_audit(settings: Settings) -> list[dict[str, Any]]:
    """The log's lines, less the signed checkpoints the gateway writes there every second."""
    path = Path(settings.audit_log)
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [line for line in lines if line.get("event") != "audit_checkpoint"]


# --- the admin API (no FHIR server: the upstream is unreachable, admin routes never touch it) ---

UNREACHABLE = "http://127.0.0.1:9/fhir/R4"
SEC = dict(roles="security_officer", sub="u-sec-001")
REC = dict(roles="records_officer", sub="u-rec-001")
NURSE = dict(roles="nurse", sub="u-nurse-001")


def available_plugins() -> tuple[str, ...]:
    """The configured default plugins, less any not written yet (the admin API needs none)."""
    names = Settings().plugins
    return tuple(n for n in names if importlib.util.find_spec(f"plugins.{n}") is not None)


class Admin:
    def __init__(self, client: Any, settings: Settings, idp: Any) -> None:
        self.client = client
        self.settings = settings
        self.idp = idp

    def headers(self, who: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.idp.token(**who)}"} if who else {}

    async def get(self, path: str, who: dict[str, str] | None, **params: str) -> tuple[int, Any]:
        resp = await self.client.get(path, params=params, headers=self.headers(who))
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["X-Request-Id"]
        return resp.status, await resp.json()

    async def post(self, path: str, who: dict[str, str] | None, body: Any) -> tuple[int, Any]:
        resp = await self.client.post(path, json=body, headers=self.headers(who))
        assert resp.headers["Content-Type"].startswith("application/json")
        return resp.status, await resp.json()

    def audit(self) -> list[dict[str, Any]]:
        return read_audit(self.settings)

    def last_audit(self) -> dict[str, Any]:
        return self.audit()[-1]


@pytest.fixture
async def admin(aiohttp_client: Any, make_settings: Any, idp: Any) -> Admin:
    settings = make_settings(UNREACHABLE, plugins=available_plugins())
    client = await aiohttp_client(create_app(settings))
    return Admin(client, settings, idp)


# --- a stand-in upstream (where no real server shows a behaviour: the tests using it say so) ---


class RecordingUpstream:
    """A stand-in FHIR server that records what the gateway sends and answers canned JSON.

    Used only where the real server cannot show the behaviour: which headers arrive upstream, and
    `_include` pages (Medplum 4.5.2's in-memory router ignores _include). The canned bodies are
    built from real resources read from the Medplum dev server.
    """

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.headers: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.bodies: list[bytes] = []
        self.reply: Any = {}
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        self.urls.append(request.path_qs)
        self.bodies.append(await request.read())
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(body=json.dumps(self.reply), content_type="application/fhir+json")


@pytest.fixture
async def recording(aiohttp_server: Any) -> Any:
    rec = RecordingUpstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    server = await aiohttp_server(app)
    rec.base = str(server.make_url("/fhir/R4"))  # type: ignore[attr-defined]
    return rec
