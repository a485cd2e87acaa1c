"""Unit tests for configuration loading (gateway/config.py).

Precedence is default < TOML file < ``EMRGUARD_*`` environment; a wrong value stops start-up with a
ConfigError naming the key. Settings that would weaken operator authentication (II.1) or switch off
policy and audit (I.4, II.2) must be refused.
"""

from __future__ import annotations

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
    path = write_toml(tmp_path, FULL_TOML)
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
    # No setting is a bool today (the only ones were the removed bench switches); the parser is kept
    # for the next one, and tested directly.
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
