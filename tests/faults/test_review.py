"""Adversarial review of the audit trail and the tokens (issue 11): each test asserts the SAFE
behaviour, so a failing test is a defect. What a client sees and what the trail holds are measured
with the real app (aiohttp test client), the real store (SQLite) and the real verify."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.app import create_app
from gateway.audit.chain import load_public_key, verify
from gateway.runtime import GATEWAY
from gateway.store.backlog import Spill
from tests.conftest import (
    AUDIENCE,
    ISSUER,
    SEC,
    UNREACHABLE,
    IdentityProvider,
    RecordingUpstream,
    auth,
    available_plugins,
    read_audit,
)
from tests.faults.conftest import stored
from tests.faults.served import locked
from tests.gateway.test_pipeline import NO_UPSTREAM_LOOKUPS

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "王"}]}


def _verify(settings: Any) -> Any:
    return verify(
        settings.db,
        settings.audit_checkpoint_file or None,
        load_public_key(settings.audit_signing_key_file),
    )


def _checkpoint_lines(path: str) -> list[bytes]:
    p = Path(path)
    return p.read_bytes().splitlines() if p.exists() else []


async def _until(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return bool(cond())


async def _gateway(aiohttp_client: Any, settings: Any) -> Any:
    return await aiohttp_client(create_app(settings))


def _reader(idp: Any) -> dict[str, str]:
    return auth(idp.token("records_officer"), "HOPERAT")


# --- checkpoints ------------------------------------------------------------------------------


async def test_checkpoint_file_unwritable_the_head_is_still_signed_into_the_log_stream(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """The checkpoint file becomes unwritable mid-run (here: replaced by a directory, which fails
    for root too). The docs promise the head is signed 'into audit_checkpoint_file and into the log
    stream'; the second anchor must not vanish with the first."""
    recording.reply = PATIENT
    settings = make_settings(
        recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_checkpoint_interval_seconds=0.1
    )
    client = await _gateway(aiohttp_client, settings)
    gw = client.server.app[GATEWAY]
    assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    assert await _until(lambda: len(_checkpoint_lines(settings.audit_checkpoint_file)) >= 1)
    cp = Path(settings.audit_checkpoint_file)
    cp.unlink()
    cp.mkdir()  # open(..., "ab") now fails with IsADirectoryError (an OSError), as a dead volume would
    for _ in range(3):
        assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    head = gw.store.chain_head[1]
    await asyncio.sleep(0.6)
    logged = [
        json.loads(x) for x in Path(settings.audit_log).read_text().splitlines() if '"audit_checkpoint"' in x
    ]
    signed = max((int(x["seq"]) for x in logged), default=0)
    cp.rmdir()  # (so that the shutdown's final checkpoint is another test's subject)
    assert signed >= head, (
        f"the chain head (record {head}) is signed nowhere: the log stream's newest checkpoint is record "
        f"{signed} (a checkpoint goes to the log only after the file write succeeded)"
    )


async def test_checkpoint_file_unwritable_readyz_says_so(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """With no checkpoint being written, the newest records can be deleted undetected: an operator
    must be told (readiness, like a store that cannot commit)."""
    recording.reply = PATIENT
    settings = make_settings(
        recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_checkpoint_interval_seconds=0.1
    )
    client = await _gateway(aiohttp_client, settings)
    assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    assert await _until(lambda: len(_checkpoint_lines(settings.audit_checkpoint_file)) >= 1)
    cp = Path(settings.audit_checkpoint_file)
    cp.unlink()
    cp.mkdir()
    assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    await asyncio.sleep(0.6)
    ready = await client.get("/readyz")
    body = await ready.json()
    cp.rmdir()
    assert ready.status == 503 or "checkpoint" in json.dumps(body), (
        f"/readyz answers {ready.status} {body} while no checkpoint can be written"
    )


async def test_a_clean_shutdown_with_an_unwritable_checkpoint_file_still_closes_the_trail(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """SIGTERM while the checkpoint file cannot be written: the final checkpoint fails, but the
    shutdown must not abort on it (the log's catch-up and close, and the parts after it)."""
    recording.reply = PATIENT
    settings = make_settings(
        recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_checkpoint_interval_seconds=0.1
    )
    client = await _gateway(aiohttp_client, settings)
    gw = client.server.app[GATEWAY]
    assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    assert await _until(lambda: len(_checkpoint_lines(settings.audit_checkpoint_file)) >= 1)
    cp = Path(settings.audit_checkpoint_file)
    cp.unlink()
    cp.mkdir()
    assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    raised: BaseException | None = None
    try:
        await client.close()
    except Exception as exc:
        raised = exc
    finally:
        cp.rmdir()
    assert raised is None, f"shutdown raised {raised!r}"
    assert gw.store._db is None, "the store was left open"


async def test_a_torn_checkpoint_line_is_repaired_not_appended_onto(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """A crash (or ENOSPC) mid-write leaves a checkpoint line without its newline. The gateway must
    cut it as it cuts a torn log line; appending onto it makes the next signed checkpoint unreadable
    and `audit verify` report the trail BROKEN for ever."""
    recording.reply = PATIENT
    settings = make_settings(
        recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_checkpoint_interval_seconds=0.1
    )
    Path(settings.audit_checkpoint_file).write_bytes(b'{"seq":1,"hash":"3f')  # torn, no newline
    client = await _gateway(aiohttp_client, settings)
    assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    await asyncio.sleep(0.4)
    await client.close()  # clean shutdown: final checkpoint
    result = _verify(settings)
    assert result.ok, (result.problems, _checkpoint_lines(settings.audit_checkpoint_file)[:2])


async def test_deleting_the_newest_records_and_their_checkpoints_is_detected(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """Someone with the host deletes the newest 2 records and the checkpoint lines that name them.
    The log stream still holds their audit lines and the signed checkpoints — verify must not pass."""
    recording.reply = PATIENT
    settings = make_settings(
        recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_checkpoint_interval_seconds=0.1
    )
    client = await _gateway(aiohttp_client, settings)
    for _ in range(4):
        assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
        await asyncio.sleep(0.15)
    await client.close()
    with contextlib.closing(sqlite3.connect(settings.db)) as db:
        top = db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
        keep = top - 2
        gone = [r[0] for r in db.execute("SELECT request_id FROM audit WHERE seq > ?", (keep,))]
        db.execute("DELETE FROM audit_patient WHERE seq > ?", (keep,))
        db.execute("DELETE FROM audit WHERE seq > ?", (keep,))
        db.commit()
    cp = Path(settings.audit_checkpoint_file)
    cp.write_bytes(
        b"".join(x + b"\n" for x in cp.read_bytes().splitlines() if orjson.loads(x)["seq"] <= keep)
    )
    logged = {x.get("request_id") for x in read_audit(settings)}
    assert set(gone) <= logged  # the evidence is there, in the log stream
    result = _verify(settings)
    assert not result.ok, (
        f"verify passes (warnings {result.warnings}) although records {keep + 1}–{top} were deleted; "
        "their audit lines and signed checkpoints are still in the log stream"
    )


# --- two gateways on one store -----------------------------------------------------------------


async def test_two_gateways_on_one_store_do_not_fork_the_chain(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """Two gateway instances pointed at one SQLite file (a second `emrguard serve` by mistake, a
    rolling restart). Either the second refuses to start, or the chain they write stays one chain."""
    recording.reply = PATIENT
    settings = make_settings(recording.base, plugins=NO_UPSTREAM_LOOKUPS)
    a = await _gateway(aiohttp_client, settings)
    try:
        b = await _gateway(aiohttp_client, settings)
    except Exception:
        return  # the second refused to start: safe
    statuses = []
    for client in (a, b, a, b, a):
        statuses.append((await client.get("/fhir/Patient/p1", headers=_reader(idp))).status)
    await a.close()
    await b.close()
    served = [s for s in statuses if s == 200]
    result = verify(settings.db)
    assert result.ok, (statuses, result.problems[:3])
    assert len(stored(settings.db)) == len(statuses)
    assert served  # (something was served, and every served answer is on one verifiable chain)


# --- the spill file ----------------------------------------------------------------------------


def test_a_spill_file_with_a_torn_last_line_keeps_the_next_lines_readable(tmp_path: Path) -> None:
    """A crash during Spill.append leaves a torn last line (ftruncate runs only on an OSError). The
    next outage appends after it: the first new line must not be glued to the fragment (it would be
    unreadable, so that 503's record is lost at the next crash)."""
    path = tmp_path / "spill.jsonl"
    path.write_bytes(b'{"kind":"audit","record":{"request_id":"torn-by-a-crash","ti')
    spill = Spill(str(path))
    record = {
        "request_id": "kept-503",
        "time": "2026-12-04T00:00:00.000+00:00",
        "decision": "none",
        "status": 503,
    }
    spill.append([b'{"kind":"audit","record":' + orjson.dumps(record) + b"}\n"])
    ids = [d["record"]["request_id"] for d in Spill(str(path)).read() if d["kind"] == "audit"]
    assert "kept-503" in ids, path.read_bytes()


async def test_a_torn_spill_line_left_by_a_crash_does_not_swallow_the_next_503_record(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any, tmp_path: Path
) -> None:
    """End to end: the gateway restarts after a crash during an outage (a spilled record whose line
    is whole, then a torn one); the store is still locked; a request is answered 503 and its record
    spilled. Every kept record must be readable from the spill file (what survives the next crash)."""
    recording.reply = PATIENT
    spill = tmp_path / "spill" / "audit-spill.jsonl"
    spill.parent.mkdir()
    settings = make_settings(
        recording.base,
        plugins=NO_UPSTREAM_LOOKUPS,
        store_busy_timeout_seconds=0.5,
        audit_spill_file=str(spill),
    )
    earlier = {
        "request_id": uuid.uuid4().hex,
        "time": "2026-12-04T00:00:00.000+00:00",
        "decision": "none",
        "status": 503,
        "patients_targeted": [],
        "patients_disclosed": [],
    }
    # the store exists (every table), then the crash left the spill file, then the store is locked
    first = await _gateway(aiohttp_client, settings)
    await first.close()
    spill.write_bytes(
        b'{"kind":"audit","record":' + orjson.dumps(earlier) + b"}\n" + b'{"kind":"audit","record":{"req'
    )
    with locked(settings.db):
        client = await _gateway(aiohttp_client, settings)
        resp = await client.get("/fhir/Patient/p1", headers=_reader(idp))
        assert resp.status == 503 and "王" not in await resp.text()
        rid = resp.headers["X-Request-Id"]
        await asyncio.sleep(0.3)
        ids = {d["record"].get("request_id") for d in Spill(str(spill)).read() if d["kind"] == "audit"}
        assert rid in ids, (
            f"the 503's record is not readable in the spill file: {spill.read_bytes()[-300:]!r}"
        )
        alerts = [d["alert"]["event"] for d in Spill(str(spill)).read() if d["kind"] == "alert"]
        assert "audit.store_unavailable" in alerts, (
            f"the outage alert (II.3) was appended onto the torn line and is unreadable: {spill.read_bytes()[:400]!r}"
        )


async def test_a_forged_spill_line_does_not_become_a_trusted_record(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any, tmp_path: Path
) -> None:
    """The spill file (on 'another volume') is replayed into the chain at start-up as if the gateway
    had written it. A line added there — a disclosure of Patient/p1 by an operator who never asked —
    must not be chained as a genuine record that `audit verify` then vouches for."""
    recording.reply = PATIENT
    spill = tmp_path / "spill" / "audit-spill.jsonl"
    settings = make_settings(recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_spill_file=str(spill))
    client = await _gateway(aiohttp_client, settings)
    assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    await client.close()
    genuine = [x for x in read_audit(settings) if x.get("event") == "audit"][-1]
    genuine.pop("event", None)
    forged = {
        **genuine,
        "request_id": uuid.uuid4().hex,
        "operator": "dr-framed",
        "operator_name": "dr-framed",
        "status": 200,
        "decision": "allow",
        "patients_disclosed": ["Patient/p1"],
    }
    spill.parent.mkdir(exist_ok=True)
    spill.write_bytes(b'{"kind":"audit","record":' + orjson.dumps(forged) + b"}\n")
    again = await _gateway(aiohttp_client, settings)
    await again.close()
    records = stored(settings.db)
    result = _verify(settings)
    chained = forged["request_id"] in records
    assert not (chained and result.ok), (
        "a record nobody's request produced (operator dr-framed, Patient/p1 disclosed, status 200) was "
        f"replayed from the spill file onto the chain and verify passes: {result.warnings}"
    )


async def test_a_duplicate_spill_line_is_committed_once(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any, tmp_path: Path
) -> None:
    recording.reply = PATIENT
    spill = tmp_path / "spill" / "audit-spill.jsonl"
    spill.parent.mkdir()
    settings = make_settings(recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_spill_file=str(spill))
    rec = {
        "request_id": uuid.uuid4().hex,
        "time": "2026-12-04T00:00:00.000+00:00",
        "decision": "none",
        "status": 503,
        "patients_targeted": [],
        "patients_disclosed": [],
    }
    line = b'{"kind":"audit","record":' + orjson.dumps(rec) + b"}\n"
    spill.write_bytes(line + line)
    client = await _gateway(aiohttp_client, settings)
    gw = client.server.app[GATEWAY]
    await client.close()
    records = stored(settings.db)  # (fails on two records with one request id)
    assert rec["request_id"] in records and gw.store.records_lost == 0
    assert verify(settings.db).ok


# --- tokens ------------------------------------------------------------------------------------


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SEC["sub"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "roles": [SEC["roles"]],
        "jti": uuid.uuid4().hex,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


@pytest.fixture
async def admin_client(aiohttp_client: Any, make_settings: Any) -> Any:
    settings = make_settings(UNREACHABLE, plugins=available_plugins())
    client = await aiohttp_client(create_app(settings))
    client.settings = settings
    return client


async def _status(client: Any, headers: dict[str, str], path: str = "/admin/audit") -> int:
    resp = await client.get(path, headers=headers)
    return resp.status


def _rs(idp: Any, claims: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(claims, idp.key, algorithm="RS256", headers={"kid": idp.kid, **headers})


async def test_token_baseline_is_accepted(admin_client: Any, idp: Any) -> None:
    assert await _status(admin_client, {"Authorization": f"Bearer {_rs(idp, _claims())}"}) == 200


async def test_token_with_an_unknown_crit_header_is_refused(admin_client: Any, idp: Any) -> None:
    """RFC 7515 §4.1.11: a JWS whose `crit` names an extension the recipient does not understand
    MUST be rejected."""
    token = _rs(
        idp,
        _claims(),
        crit=["urn:emrguard:test-must-understand"],
        **{"urn:emrguard:test-must-understand": True},
    )
    assert await _status(admin_client, {"Authorization": f"Bearer {token}"}) == 401


async def test_token_issued_far_in_the_future_is_refused(admin_client: Any, idp: Any) -> None:
    token = _rs(idp, _claims(iat=int(time.time()) + 10 * 86400, nbf=None))
    assert await _status(admin_client, {"Authorization": f"Bearer {token}"}) == 401


async def test_token_exp_as_string_is_refused(admin_client: Any, idp: Any) -> None:
    token = _rs(idp, _claims(exp=str(int(time.time()) + 600)))
    assert await _status(admin_client, {"Authorization": f"Bearer {token}"}) == 401


async def test_token_with_a_future_exp_but_no_nbf_and_far_iat_is_not_cached_into_validity(
    admin_client: Any, idp: Any
) -> None:
    token = _rs(idp, _claims(nbf=int(time.time()) + 3600))
    for _ in range(2):
        assert await _status(admin_client, {"Authorization": f"Bearer {token}"}) == 401


async def test_token_with_another_algorithm_than_its_key_is_refused(admin_client: Any, idp: Any) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    es = jwt.encode(_claims(), ec_key, algorithm="ES256", headers={"kid": idp.kid})
    ps = jwt.encode(_claims(), idp.key, algorithm="PS256", headers={"kid": idp.kid})  # the JWK says RS256
    for token in (es, ps):
        assert await _status(admin_client, {"Authorization": f"Bearer {token}"}) == 401


async def test_tokens_outside_the_authorization_header_are_ignored(admin_client: Any, idp: Any) -> None:
    token = _rs(idp, _claims())
    for headers in (
        {"Cookie": f"access_token={token}"},
        {"X-Access-Token": token},
        {"X-Forwarded-Access-Token": token},
        {"Authorization": token},  # no scheme
        {"Authorization": f"Basic {token}"},
        {"Proxy-Authorization": f"Bearer {token}"},
    ):
        assert await _status(admin_client, headers) == 401, headers


async def test_bearer_scheme_case_and_spacing(admin_client: Any, idp: Any) -> None:
    token = _rs(idp, _claims())
    assert await _status(admin_client, {"Authorization": f"bearer {token}"}) == 200
    assert await _status(admin_client, {"Authorization": f"Bearer   {token}  "}) == 200
    assert await _status(admin_client, {"Authorization": f"Bearer\t{token}"}) == 401  # not a space
    assert await _status(admin_client, {"Authorization": f"Bearer {token} {token}"}) == 401


@pytest.mark.parametrize(
    "pad",
    [
        20_000,
        pytest.param(
            200_000,
            marks=pytest.mark.xfail(
                strict=True,
                reason="documented limit: beyond 4x max_header_bytes aiohttp's parser answers a bare 400 "
                "before any handler (README): there is no request to record",
            ),
        ),
    ],
)
async def test_a_very_long_token_is_refused_and_audited(admin_client: Any, idp: Any, pad: int) -> None:
    token = _rs(idp, _claims(pad="x" * pad))
    resp = await admin_client.get("/admin/audit", headers={"Authorization": f"Bearer {token}"})
    assert resp.status in (400, 401, 431)
    rid = resp.headers.get("X-Request-Id")
    assert rid and rid in stored(admin_client.settings.db)


async def test_nested_jwt_payload_is_refused(admin_client: Any, idp: Any) -> None:
    inner = _rs(idp, _claims())
    outer = jwt.api_jws.encode(
        inner.encode(), idp.key, algorithm="RS256", headers={"kid": idp.kid, "cty": "JWT"}
    )
    assert await _status(admin_client, {"Authorization": f"Bearer {outer}"}) == 401


async def test_jwks_keys_not_for_signatures_are_never_used(aiohttp_client: Any, make_settings: Any) -> None:
    """A JWKS with a `use: enc` key, an `x5c`-only key and two keys with one kid: only a signature
    key verifies; a token signed by the `enc` key is refused; the usable key still works."""
    from devtools import tokens

    provider = IdentityProvider()
    try:
        enc_key = tokens.generate_key()
        enc = {**tokens.public_jwk(enc_key, "enc-key"), "use": "enc"}
        x5c_only = {
            "kty": "RSA",
            "kid": "x5c-key",
            "use": "sig",
            "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
        }
        other = tokens.generate_key()
        dup = tokens.public_jwk(other, provider.kid)  # same kid as the real key, listed first
        provider.jwks = {"keys": [enc, x5c_only, dup, tokens.public_jwk(provider.key, provider.kid)]}
        settings = make_settings(UNREACHABLE, plugins=available_plugins(), jwks_url=provider.url)
        client = await aiohttp_client(create_app(settings))
        by_enc = jwt.encode(_claims(), enc_key, algorithm="RS256", headers={"kid": "enc-key"})
        assert await _status(client, {"Authorization": f"Bearer {by_enc}"}) == 401
        by_x5c = jwt.encode(_claims(), enc_key, algorithm="RS256", headers={"kid": "x5c-key"})
        assert await _status(client, {"Authorization": f"Bearer {by_x5c}"}) == 401
        good = jwt.encode(_claims(), provider.key, algorithm="RS256", headers={"kid": provider.kid})
        assert await _status(client, {"Authorization": f"Bearer {good}"}) == 200
    finally:
        provider.close()


async def test_audience_array_with_ours_is_accepted_and_without_is_refused(
    admin_client: Any, idp: Any
) -> None:
    ok = _rs(idp, _claims(aud=["another-service", AUDIENCE]))
    no = _rs(idp, _claims(aud=["another-service", AUDIENCE.upper()]))
    assert await _status(admin_client, {"Authorization": f"Bearer {ok}"}) == 200
    assert await _status(admin_client, {"Authorization": f"Bearer {no}"}) == 401


# --- secrets in a refused request's query ------------------------------------------------------

SECRETS = ("S3CR3T-CODE", "S3CR3T-CLIENT", "S3CR3T-IDTOKEN", "S3CR3T-UPPER", "S3CR3T-PCT", "S3CR3T-REFRESH")
QUERY = (
    "code=S3CR3T-CODE&client_secret=S3CR3T-CLIENT&id_token=S3CR3T-IDTOKEN"
    "&CLIENT_SECRET=S3CR3T-UPPER&client%5Fsecret=S3CR3T-PCT&refresh_token=S3CR3T-REFRESH&_count=5"
)


@pytest.mark.parametrize("path", ["/fhir/Patient", "/admin/audit", "/not-a-gateway-path"])
async def test_secrets_in_a_refused_query_are_redacted_in_the_record_and_the_log(
    admin_client: Any, path: str
) -> None:
    with structlog.testing.capture_logs() as logs:
        resp = await admin_client.get(f"{path}?{QUERY}")
        body = await resp.text()
    assert resp.status in (401, 404)
    rid = resp.headers["X-Request-Id"]
    record = stored(admin_client.settings.db)[rid]
    blob = orjson.dumps(record).decode()
    line = [x for x in read_audit(admin_client.settings) if x.get("request_id") == rid]
    assert line, "no log line for the refused request"
    for secret in SECRETS:
        assert secret not in blob, (secret, record["query"])
        assert secret not in json.dumps(line), secret
        assert secret not in json.dumps(logs, default=str), secret
        assert secret not in body, secret
    assert "_count=5" in (record["query"] or "")


# --- the store's files -------------------------------------------------------------------------


async def test_wal_and_shm_deleted_mid_run_lose_no_served_record(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    """Someone (a cleanup job) deletes the store's -wal and -shm files while the gateway runs.
    Every request that was answered 200 must still have its record once the gateway has stopped,
    and the chain must verify."""
    recording.reply = PATIENT
    settings = make_settings(recording.base, plugins=NO_UPSTREAM_LOOKUPS)
    client = await _gateway(aiohttp_client, settings)
    served: list[str] = []

    async def get() -> None:
        resp = await client.get("/fhir/Patient/p1", headers=_reader(idp))
        if resp.status == 200:
            served.append(resp.headers["X-Request-Id"])

    for _ in range(3):
        await get()
    for suffix in ("-wal", "-shm"):
        Path(f"{settings.db}{suffix}").unlink(missing_ok=True)
    for _ in range(3):
        await get()
    await client.close()
    records = stored(settings.db)
    missing = [rid for rid in served if rid not in records]
    assert not missing, f"{len(missing)} of {len(served)} answered requests have no record"
    result = _verify(settings)
    assert result.ok, result.problems[:3]


@pytest.mark.parametrize(
    "record",
    [
        {"request_id": 12345, "time": "2026-12-04T00:00:00.000+00:00", "decision": "none", "status": 503},
        {"request_id": "no-time-field", "decision": "none", "status": 503},
    ],
    ids=["request-id-not-a-string", "no-time"],
)
async def test_an_unusable_spill_line_is_counted_not_silently_dropped(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, tmp_path: Path, record: dict
) -> None:
    """A spilled record the replay cannot use is a record lost: it must be counted (records_lost,
    /readyz) or committed, never skipped without a trace."""
    spill = tmp_path / "spill" / "audit-spill.jsonl"
    spill.parent.mkdir()
    spill.write_bytes(b'{"kind":"audit","record":' + orjson.dumps(record) + b"}\n")
    settings = make_settings(recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_spill_file=str(spill))
    with structlog.testing.capture_logs() as logs:
        client = await _gateway(aiohttp_client, settings)
        gw = client.server.app[GATEWAY]
        await asyncio.sleep(0.3)
        lost = gw.store.records_lost
        await client.close()
    committed = str(record["request_id"]) in {str(k) for k in stored(settings.db)}
    assert committed or lost > 0, (
        f"the spilled record {record} vanished: not committed, records_lost = {lost}, "
        f"log events {[e['event'] for e in logs]}"
    )


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00", "2026-12-04T19:44:30.5+05:45"]
)
async def test_audit_search_time_at_the_edges_is_an_answer_not_a_500(
    admin_client: Any, idp: Any, value: str
) -> None:
    headers = {"Authorization": f"Bearer {_rs(idp, _claims())}"}
    resp = await admin_client.get("/admin/audit", params={"from": value}, headers=headers)
    assert resp.status in (200, 400), (resp.status, (await resp.text())[:300])
    resp = await admin_client.get("/admin/audit", params={"to": value}, headers=headers)
    assert resp.status in (200, 400), (resp.status, (await resp.text())[:300])


@pytest.mark.parametrize("how", ["deleted", "emptied"])
async def test_verify_fails_when_the_named_checkpoint_file_is_gone_or_emptied(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any, how: str
) -> None:
    """The gateway signed checkpoints into the file `audit verify --checkpoints` names; the file is
    then deleted or truncated to nothing (and the newest record deleted). That is not 'no
    checkpoints configured': verify must fail, not pass with a warning."""
    recording.reply = PATIENT
    settings = make_settings(
        recording.base, plugins=NO_UPSTREAM_LOOKUPS, audit_checkpoint_interval_seconds=0.1
    )
    client = await _gateway(aiohttp_client, settings)
    for _ in range(3):
        assert (await client.get("/fhir/Patient/p1", headers=_reader(idp))).status == 200
    await client.close()
    assert _checkpoint_lines(settings.audit_checkpoint_file)
    cp = Path(settings.audit_checkpoint_file)
    if how == "deleted":
        cp.unlink()
    else:
        cp.write_bytes(b"")
    with contextlib.closing(sqlite3.connect(settings.db)) as db:
        top = db.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
        db.execute("DELETE FROM audit_patient WHERE seq = ?", (top,))
        db.execute("DELETE FROM audit WHERE seq = ?", (top,))
        db.commit()
    result = _verify(settings)
    assert not result.ok, f"verify passes with the checkpoint file {how}: warnings {result.warnings}"


# --- known open (issue 11, closing note), strict: each must start failing the mark once fixed ---
_OPEN = {
    "test_deleting_the_newest_records_and_their_checkpoints_is_detected": (
        "open: audit verify does not read the log stream, which still holds the deleted records' lines "
        "and signed checkpoints (a second anchor not yet cross-checked)"
    ),
    "test_a_forged_spill_line_does_not_become_a_trusted_record": (
        "open: spill lines carry no MAC; a line forged while the store was down is replayed as a record"
    ),
}
for _name, _why in _OPEN.items():
    globals()[_name] = pytest.mark.xfail(reason=_why, strict=True)(globals()[_name])
