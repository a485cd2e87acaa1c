"""Unit tests for configuration loading (gateway/config.py).

Precedence is default < TOML file < ``EMRGUARD_*`` environment; a wrong value stops start-up with a
ConfigError naming the key. Settings that would weaken operator authentication (II.1) or switch off
policy and audit (I.4, II.2) must be refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ALLOWED_JWT_ALGORITHMS, ConfigError, Settings, load_settings
from tests.conftest import POLICY_DIR as CONFTEST_POLICY_DIR

POLICY_DIR = str(CONFTEST_POLICY_DIR)

BASE_ENV = {
    "EMRGUARD_UPSTREAM_URL": "http://fhir.internal:8103/fhir/R4",
    "EMRGUARD_JWKS_URL": "https://idp.hospital/realms/h/protocol/openid-connect/certs",
    "EMRGUARD_ISSUER": "https://idp.hospital/realms/h",
    "EMRGUARD_AUDIENCE": "emrguard",
    "EMRGUARD_POLICY_DIR": POLICY_DIR,
    "EMRGUARD_PSEUDONYM_SECRET": "0123456789abcdef0123456789abcdef",
    "EMRGUARD_WATERMARK_SECRET": "watermark-0123456789abcdef0123456789",
}


@pytest.fixture(autouse=True, scope="module")
def _audit_signing_key(audit_signing_key: Path) -> None:
    """Every configuration here has its audit signing key (`emrguard serve` refuses to start without
    one unless audit_checkpoints = false); made once per session by tests/conftest.py."""
    BASE_ENV["EMRGUARD_AUDIT_SIGNING_KEY_FILE"] = str(audit_signing_key)
    BASE_ENV["EMRGUARD_AUDIT_CHECKPOINT_FILE"] = str(audit_signing_key.parent / "audit-checkpoints.jsonl")


def key_toml() -> str:
    """The two lines `emrguard keys init` prints, for the session's key."""
    return (
        f'audit_signing_key_file = "{BASE_ENV["EMRGUARD_AUDIT_SIGNING_KEY_FILE"]}"\n'
        f'audit_checkpoint_file = "{BASE_ENV["EMRGUARD_AUDIT_CHECKPOINT_FILE"]}"\n'
    )


def env(**overrides: str | None) -> dict[str, str]:
    out = dict(BASE_ENV)
    for key, value in overrides.items():
        name = "EMRGUARD_" + key.upper()
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def write_toml(tmp_path: Path, text: str, name: str = "emrguard.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path | None = None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=env() if environ is None else environ)
    return str(info.value)


# --- defaults, file, environment -------------------------------------------------------------------


def test_defaults_are_safe():
    """Loopback listen, asymmetric JWT algorithms only, full pipeline on (II.1, I.4, II.2)."""
    s = load_settings(None, environ=env())
    assert s.listen == "127.0.0.1:8080"
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 8080)
    assert s.jwt_algorithms and set(s.jwt_algorithms) <= ALLOWED_JWT_ALGORITHMS
    assert not hasattr(s, "bare_passthrough")  # the pass-through floor lives in bench/ only
    assert "write_guard" not in s.plugins  # required controls load whatever plugins says
    assert s.policy_engine == "embedded"
    assert s.upstream_authorization == ""
    assert s.audit_log == "-"


def test_toml_overrides_defaults_and_env_overrides_toml(tmp_path):
    path = write_toml(
        tmp_path,
        f"""
listen = "127.0.0.1:9000"
upstream_timeout = 10
upstream_pool_size = 7
jwt_algorithms = ["ES256"]
policy_dir = "{POLICY_DIR}"
issuer = "https://from-file"
""",
    )
    s = load_settings(
        path, environ=env(upstream_timeout="12.5", issuer=None, policy_dir=None, jwt_algorithms="RS256,PS256")
    )
    assert s.listen == "127.0.0.1:9000"  # file
    assert s.upstream_pool_size == 7  # file
    assert s.issuer == "https://from-file"  # file (not in env)
    assert s.upstream_timeout == 12.5  # env beats file
    assert s.jwt_algorithms == ("RS256", "PS256")  # env beats file
    assert s.upstream_connect_timeout == Settings.upstream_connect_timeout  # default


FULL_TOML = f"""
listen = "127.0.0.1:8081"
upstream_url = "http://file-upstream/fhir"
jwks_url = "https://file-idp/certs"
issuer = "https://file-idp"
audience = "file-aud"
policy_engine = "embedded"
opa_url = "http://file-opa:8181"
policy_dir = "{POLICY_DIR}"
db = "/var/lib/file.sqlite"
audit_log = "/var/log/file.jsonl"
pseudonym_secret = "file-secret-0123456789abcdef0123456789"
watermark_secret = "file-watermark-0123456789abcdef0123456789"
"""


@pytest.mark.parametrize(
    ("variable", "key", "value"),
    [
        ("EMRGUARD_LISTEN", "listen", "0.0.0.0:9443"),
        ("EMRGUARD_UPSTREAM_URL", "upstream_url", "https://env-upstream/fhir"),
        ("EMRGUARD_JWKS_URL", "jwks_url", "https://env-idp/certs"),
        ("EMRGUARD_ISSUER", "issuer", "https://env-idp"),
        ("EMRGUARD_AUDIENCE", "audience", "env-aud"),
        ("EMRGUARD_POLICY_ENGINE", "policy_engine", "opa"),
        ("EMRGUARD_OPA_URL", "opa_url", "http://env-opa:8181"),
        ("EMRGUARD_DB", "db", "/tmp/env.sqlite"),
        ("EMRGUARD_AUDIT_LOG", "audit_log", "/tmp/env-audit.jsonl"),
    ],
)
def test_each_documented_variable_maps_to_its_key(tmp_path, variable, key, value):
    path = write_toml(tmp_path, FULL_TOML + key_toml())
    from_file = load_settings(path, environ={})
    s = load_settings(path, environ={variable: value})
    assert getattr(from_file, key) != value
    assert getattr(s, key) == value
    # ... and nothing else moved.
    for other in (
        "listen",
        "upstream_url",
        "jwks_url",
        "issuer",
        "audience",
        "policy_engine",
        "opa_url",
        "db",
        "audit_log",
    ):
        if other != key:
            assert getattr(s, other) == getattr(from_file, other), other


def test_emrguard_config_picks_the_file(tmp_path):
    path = write_toml(tmp_path, 'listen = "127.0.0.1:7001"\n')
    assert load_settings(None, environ=env(config=str(path))).listen == "127.0.0.1:7001"


def test_explicit_path_beats_emrguard_config(tmp_path):
    chosen = write_toml(tmp_path, 'listen = "127.0.0.1:7001"\n', "a.toml")
    other = write_toml(tmp_path, 'listen = "127.0.0.1:7002"\n', "b.toml")
    assert load_settings(chosen, environ=env(config=str(other))).listen == "127.0.0.1:7001"


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.toml"
    assert str(missing) in config_error(environ=env(config=str(missing)))


def test_invalid_toml(tmp_path):
    path = write_toml(tmp_path, "listen = \n")
    message = config_error(path)
    assert "not valid TOML" in message and str(path) in message


# --- lists -----------------------------------------------------------------------------------------


def test_lists_from_comma_separated_environment():
    s = load_settings(None, environ=env(jwt_algorithms=" RS256, ES256 ,,", plugins="purpose,seal"))
    assert s.jwt_algorithms == ("RS256", "ES256")
    assert s.plugins == ("purpose", "seal")


def test_empty_list_from_environment():
    assert load_settings(None, environ=env(plugins="")).plugins == ()


def test_lists_from_toml_arrays(tmp_path):
    key = tmp_path / "idp.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    path = write_toml(tmp_path, f'plugins = ["purpose", "seal"]\njwt_public_key_files = ["{key}"]\n')
    s = load_settings(path, environ=env(jwks_url=None))
    assert s.plugins == ("purpose", "seal")
    assert s.jwt_public_key_files == (str(key),)


def test_missing_public_key_file_is_refused(tmp_path):
    message = config_error(environ=env(jwks_url=None, jwt_public_key_files=str(tmp_path / "gone.pem")))
    assert "jwt_public_key_files" in message


# --- errors name the key ---------------------------------------------------------------------------


def test_missing_upstream_url():
    message = config_error(environ=env(upstream_url=None))
    assert "'upstream_url'" in message and "EMRGUARD_UPSTREAM_URL" in message


@pytest.mark.parametrize("url", ["fhir.internal/fhir", "ftp://fhir/fhir", "http://"])
def test_upstream_url_must_be_http(url):
    assert "'upstream_url'" in config_error(environ=env(upstream_url=url))


@pytest.mark.parametrize("listen", ["8080", "host:", "host:http", "host:0", "host:65536", "127.0.0.1:-1"])
def test_bad_listen(listen):
    assert "'listen'" in config_error(environ=env(listen=listen))


def test_ipv6_listen():
    s = load_settings(None, environ=env(listen="[::1]:8443"))
    assert (s.listen_host, s.listen_port) == ("::1", 8443)


def test_unknown_toml_key(tmp_path):
    path = write_toml(tmp_path, 'upstream_uri = "http://x/fhir"\n')
    assert "'upstream_uri'" in config_error(path)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EMRGUARD_BARE_PASSTHROUGH", "maybe"),
        ("EMRGUARD_UPSTREAM_POOL_SIZE", "ten"),
        ("EMRGUARD_JWT_LEEWAY_SECONDS", "1.5"),
        ("EMRGUARD_UPSTREAM_TIMEOUT", "soon"),
    ],
)
def test_bad_scalar_from_environment_names_variable(variable, value):
    assert variable in config_error(environ={**env(), variable: value})


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('bare_passthrough = "maybe"', "bare_passthrough"),
        ("bare_passthrough = true", "bare_passthrough"),
        ("upstream_pool_size = true", "upstream_pool_size"),
        ('upstream_pool_size = "many"', "upstream_pool_size"),
        ("upstream_timeout = false", "upstream_timeout"),
        ("issuer = 5", "issuer"),
        ("plugins = 3", "plugins"),
    ],
)
def test_bad_scalar_from_toml_names_key(tmp_path, line, key):
    assert f"'{key}'" in config_error(write_toml(tmp_path, line + "\n"))


@pytest.mark.parametrize(
    ("text", "expected"), [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False)]
)
def test_bool_spellings(text, expected):
    # The parser of bool settings (audit_checkpoints), tested directly.
    from gateway.config import _coerce

    assert _coerce("'flag'", text, bool, from_env=True) is expected


@pytest.mark.parametrize(
    "key",
    [
        "upstream_timeout",
        "upstream_connect_timeout",
        "policy_timeout_seconds",
        "upstream_pool_size",
        "max_request_bytes",
    ],
)
def test_sizes_and_timeouts_must_be_positive(key):
    assert f"'{key}'" in config_error(environ=env(**{key: "0"}))


def test_nan_timeout_is_refused():
    assert "UPSTREAM_TIMEOUT" in config_error(environ=env(upstream_timeout="nan"))


def test_toml_float_for_integer_key_is_refused(tmp_path):
    assert "'upstream_pool_size'" in config_error(write_toml(tmp_path, "upstream_pool_size = 2.9\n"))


@pytest.mark.parametrize("engine", ["wasm", "OPA", ""])
def test_policy_engine_must_be_known(engine):
    assert "'policy_engine'" in config_error(environ=env(policy_engine=engine))


def test_opa_engine_needs_opa_url():
    assert "'opa_url'" in config_error(environ=env(policy_engine="opa"))
    assert "'opa_url'" in config_error(environ=env(policy_engine="opa", opa_url="opa:8181"))
    s = load_settings(None, environ=env(policy_engine="opa", opa_url="http://127.0.0.1:8181"))
    assert (s.policy_engine, s.opa_url) == ("opa", "http://127.0.0.1:8181")


def test_embedded_engine_needs_policy_dir(tmp_path):
    assert "'policy_dir'" in config_error(environ=env(policy_dir=str(tmp_path / "missing")))


@pytest.mark.parametrize("algorithms", ["none", "HS256", "RS256,HS256", "RS256,none", "hs512", ""])
def test_jwt_algorithms_refuse_none_and_hmac(algorithms):
    """II.1: 'none' is no signature and HMAC lets a public-key holder mint tokens."""
    message = config_error(environ=env(jwt_algorithms=algorithms))
    assert "'jwt_algorithms'" in message


def test_jwt_algorithms_refused_from_toml_too(tmp_path):
    assert "'jwt_algorithms'" in config_error(write_toml(tmp_path, 'jwt_algorithms = ["ES256", "none"]\n'))


@pytest.mark.parametrize("key", ["issuer", "audience"])
def test_issuer_and_audience_are_required(key):
    """II.1: without them a token minted for another service or by another IdP would be accepted."""
    assert f"'{key}'" in config_error(environ=env(**{key: None}))


def test_token_verification_key_is_required():
    """II.1: a JWKS URL or a key file must be set, or no token could be verified."""
    assert "'jwks_url'" in config_error(environ=env(jwks_url=None))
    assert "'jwks_url'" in config_error(environ=env(jwks_url="idp/certs"))


def test_bare_passthrough_is_refused_with_where_it_went():
    """I.4/II.2: no setting switches off policy, filter and audit — not even acknowledged; the old
    keys are refused with a message naming the benchmark tool that replaced them."""
    message = config_error(environ=env(bare_passthrough="true"))
    assert "BARE_PASSTHROUGH" in message and "bench/passthrough.py" in message
    message = config_error(
        environ={
            "EMRGUARD_UPSTREAM_URL": "http://127.0.0.1:1/fhir",
            "EMRGUARD_BARE_PASSTHROUGH": "true",
            "EMRGUARD_UNSAFE_BENCH_MODE_ACKNOWLEDGED": "true",
            "EMRGUARD_POLICY_DIR": POLICY_DIR,
        },
    )
    assert "removed" in message and "bench/passthrough.py" in message


@pytest.mark.parametrize("key", ["db", "audit_log"])
def test_db_and_audit_log_cannot_be_empty(key):
    """II.2: there is always somewhere to write the audit trail."""
    assert f"'{key}'" in config_error(environ=env(**{key: ""}))


def test_pseudonym_secret_must_be_long_enough():
    """Research pseudonyms (I.4) are only as strong as their key."""
    with pytest.raises(ConfigError, match="pseudonym_secret"):
        load_settings(environ=env(pseudonym_secret="short"))


def test_dev_token_is_not_part_of_the_installed_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    """Development keys never ship: the old command says where token minting went, whatever follows."""
    from gateway.cli import main

    assert main(["dev-token", "--role", "nurse", "--dept", "cardiology"]) == 2
    assert "python -m devtools.tokens" in capsys.readouterr().err


# --- the audit signing key (II.2 tamper evidence) and retention (网络安全法 第二十一条) ----------------

NO_KEY = {"audit_signing_key_file": None, "audit_checkpoint_file": None}


def test_no_signing_key_is_refused_with_what_to_do():
    """Before: no key, no checkpoints, no warning — a deleted tail went unnoticed (issue 11, finding 5).
    Now start-up stops, naming the keys and the command that makes the key."""
    message = config_error(environ=env(**NO_KEY))
    assert "'audit_signing_key_file'" in message and "audit_checkpoint_file" in message
    assert "emrguard keys init" in message and "audit_checkpoints = false" in message


def test_a_config_that_worked_before_but_for_the_key_is_refused(tmp_path):
    """A deliberate break: everything else set, as a config of yesterday would be."""
    with pytest.raises(ConfigError, match="emrguard keys init"):
        load_settings(write_toml(tmp_path, FULL_TOML), environ={})


def test_checkpoints_switched_off_explicitly_start_without_a_key():
    s = load_settings(None, environ=env(**NO_KEY, audit_checkpoints="false"))
    assert s.audit_checkpoints is False and s.audit_signing_key_file == ""
    assert load_settings(None, environ=env()).audit_checkpoints is True  # on unless said otherwise


def test_checkpoints_off_with_a_key_is_a_contradiction():
    assert "'audit_checkpoints'" in config_error(environ=env(audit_checkpoints="false"))


def test_the_signing_key_must_be_an_ed25519_private_key(tmp_path):
    not_a_key = tmp_path / "k.pem"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    message = config_error(environ=env(audit_signing_key_file=str(not_a_key)))
    assert "'audit_signing_key_file'" in message and "Ed25519" in message
    assert "'audit_signing_key_file'" in config_error(
        environ=env(audit_signing_key_file=str(tmp_path / "gone"))
    )
    assert "'audit_checkpoint_file'" in config_error(environ=env(audit_checkpoint_file=None))


@pytest.mark.parametrize("days", ["0", "30", "179"])
def test_retention_below_six_months_is_refused(days):
    message = config_error(environ=env(audit_retention_days=days))
    assert "'audit_retention_days'" in message and "网络安全法 第二十一条" in message
    assert load_settings(None, environ=env(audit_retention_days="365")).audit_retention_days == 365
    assert load_settings(None, environ=env()).audit_retention_days == 180


def test_keys_init_makes_a_private_key_and_prints_the_lines_to_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    folder = tmp_path / "keys"
    assert main(["keys", "init", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    key = folder / "audit-signing.pem"
    assert key.stat().st_mode & 0o777 == 0o600 and b"PRIVATE KEY" in key.read_bytes()
    assert (folder / "audit-signing.pub.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    lines = [x for x in out.splitlines() if x and not x.startswith("#")]
    assert lines == [
        f'audit_signing_key_file = "{key}"',
        f'audit_checkpoint_file = "{tmp_path / "audit-checkpoints.jsonl"}"',
    ]
    # The printed lines are what a config needs: they load.
    s = load_settings(write_toml(tmp_path, FULL_TOML + "\n".join(lines) + "\n"), environ={})
    assert s.audit_signing_key_file == str(key)


def test_keys_init_never_overwrites_a_key_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    assert main(["keys", "init", "--dir", str(tmp_path)]) == 0
    key = tmp_path / "audit-signing.pem"
    before = key.read_bytes()
    assert main(["keys", "init", "--dir", str(tmp_path)]) == 1
    assert "not overwritten" in capsys.readouterr().err and key.read_bytes() == before
    assert main(["keys", "init", "--dir", str(tmp_path), "--force"]) == 0
    assert key.read_bytes() != before and key.stat().st_mode & 0o777 == 0o600


def _serve(tmp_path: Path, **variables: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EMRGUARD_")}
    environ.update({k: v for k, v in BASE_ENV.items()})
    environ.update({f"EMRGUARD_{k.upper()}": v for k, v in variables.items()})
    environ = {k: v for k, v in environ.items() if v != "<unset>"}
    environ["EMRGUARD_DB"] = str(tmp_path / "a.sqlite")
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"], env=environ, stderr=subprocess.PIPE, text=True
    )


def test_serve_refuses_to_start_without_a_signing_key(tmp_path: Path) -> None:
    proc = _serve(tmp_path, audit_signing_key_file="<unset>", audit_checkpoint_file="<unset>")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "emrguard keys init" in err and not (tmp_path / "a.sqlite").exists()


def test_serve_with_checkpoints_off_warns_loudly(tmp_path: Path) -> None:
    from devtools.procs import free_port

    port = free_port()
    proc = _serve(
        tmp_path,
        audit_signing_key_file="<unset>",
        audit_checkpoint_file="<unset>",
        audit_checkpoints="false",
        listen=f"127.0.0.1:{port}",
        upstream_url="http://127.0.0.1:9/fhir",
    )
    try:
        assert proc.stderr is not None
        seen = [proc.stderr.readline() for _ in range(3)]
        assert any("checkpoints: OFF" in line for line in seen)
        assert any("WARNING" in line and "audit checkpoints are OFF" in line for line in seen)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
