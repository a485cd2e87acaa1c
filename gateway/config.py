"""Gateway configuration: a TOML file, every key overridable by an ``EMRGUARD_<KEY>`` variable.

Precedence: built-in default < TOML file (``--config`` or ``EMRGUARD_CONFIG``) < environment.
An invalid configuration stops start-up with a :class:`ConfigError` that names the key and what is
wrong, so the hospital's IT desk can fix it without reading code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ENV_PREFIX = "EMRGUARD_"
POLICY_ENGINES = ("embedded", "opa")
# Asymmetric algorithms only: HMAC would let anyone holding the *public* key mint tokens
# (algorithm confusion), and "none" is no signature at all. II.1: a token must prove the person.
ALLOWED_JWT_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


# EMRGUARD_* variables read by the tooling, not by Settings.
NON_SETTING_VARIABLES = frozenset({"CONFIG", "OPA_BIN", "CACHE"})
#: Keys that no longer exist, and what to do instead (refused with this message, never ignored).
#: 网络安全法 第二十一条: network logs kept at least six months.
MIN_RETENTION_DAYS = 180

REMOVED_KEYS = {
    "bare_passthrough": "the bare pass-through is a benchmark tool now (bench/passthrough.py, run by "
    "`make bench`); the gateway always decides, filters and audits",
    "unsafe_bench_mode_acknowledged": "the bare pass-through is a benchmark tool now (bench/passthrough.py)",
}


#: The longest break-glass reason kept (characters, after cleaning; plugins/break_glass).
MAX_BREAK_GLASS_REASON = 500


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class Settings:
    # --- network ---------------------------------------------------------------------------
    listen: str = "127.0.0.1:8080"
    #: Base URL clients use to reach the gateway's FHIR API; when empty it is derived from each
    #: request (scheme + Host + /fhir). Absolute upstream URLs are rewritten to it.
    public_base_url: str = ""
    # --- upstream FHIR server --------------------------------------------------------------
    upstream_url: str = ""
    #: Value of the Authorization header the gateway sends upstream (its own credentials).
    #: The caller's token is never forwarded.
    upstream_authorization: str = ""
    upstream_timeout: float = 30.0
    upstream_connect_timeout: float = 5.0
    upstream_pool_size: int = 100
    max_request_bytes: int = 10 * 1024 * 1024
    max_response_bytes: int = 64 * 1024 * 1024
    #: The request target (path and query, bytes as sent); longer: an audited 414 (II.2).
    max_url_bytes: int = 8192
    #: One header field (name and value, bytes as sent); longer: an audited 431 (II.2).
    max_header_bytes: int = 8192
    #: Header fields in one request; more: an audited 431 (II.2).
    max_header_count: int = 100
    # --- operator tokens (II.1) ------------------------------------------------------------
    jwks_url: str = ""
    jwt_public_key_files: tuple[str, ...] = ()
    issuer: str = ""
    audience: str = ""
    jwt_algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
    jwt_leeway_seconds: int = 30
    #: An unknown ``kid`` triggers a JWKS refetch at most this often, so random kids cannot
    #: flood the identity provider.
    jwks_min_refresh_seconds: float = 30.0
    #: How long the identity provider's keys — and a token verified with them — are trusted before
    #: they are fetched (verified) again: a withdrawn key stops working within this time.
    jwks_cache_seconds: float = 300.0
    roles_claim: str = "roles"
    #: "array" (a JSON array of strings), or "space-separated" for identity providers that send one
    #: string (OAuth scope style). Any other shape is refused.
    roles_claim_format: str = "array"
    dept_claim: str = "dept"
    name_claim: str = "name"
    org_claim: str = "org"
    purpose_claim: str = "purpose_of_use"
    # --- policy ----------------------------------------------------------------------------
    policy_engine: str = "embedded"
    opa_url: str = ""
    #: Rego modules and data for the embedded engine; empty: the policies installed with the package.
    policy_dir: str = ""
    policy_timeout_seconds: float = 2.0
    #: Policy answers kept for reuse (gateway/policy/cache.py: exact, keyed by the whole input and
    #: the policy revision, each for as long as the policy says it holds); 0: no cache.
    decision_cache_size: int = 20000
    # --- state and audit -------------------------------------------------------------------
    db: str = "var/emrguard.sqlite"
    audit_log: str = "-"
    #: Ed25519 private key (PEM) that signs audit-chain checkpoints (II.2 tamper evidence). Without
    #: it the chain still detects edits, deletions and swaps, but not a truncated tail.
    audit_signing_key_file: str = ""
    #: Where signed checkpoints go (JSON lines, outside the database); they also go to the log stream.
    audit_checkpoint_file: str = ""
    audit_checkpoint_interval_seconds: float = 1.0
    #: False only to run deliberately without signed checkpoints (a truncated tail then goes
    #: unnoticed); otherwise ``emrguard serve`` refuses to start without a signing key (II.2).
    audit_checkpoints: bool = True
    #: How long a request waits for a store that another process holds locked before its answer
    #: is 503 (its record is kept in the backlog, never dropped).
    store_busy_timeout_seconds: float = 2.0
    #: Records (and alerts) kept in memory while the store cannot commit; committed, in order,
    #: when it can again. Beyond this many the gateway refuses new requests (503) rather than lose one.
    audit_backlog_max: int = 10000
    #: A file on another volume where the backlog is also written while the store cannot commit
    #: (empty: memory only); replayed into the store at start-up and when the store recovers.
    audit_spill_file: str = ""
    #: 网络安全法 第二十一条: network logs are kept at least six months. No command removes a record
    #: younger than this; older records may be moved into signed archive segments (audit archive).
    audit_retention_days: int = 180
    #: Where ``emrguard audit archive`` writes sealed, signed, chain-linked segments.
    audit_archive_dir: str = "var/audit-archive"
    #: A FHIR server that keeps AuditEvents (IHE BALP); empty: no forwarding.
    audit_forward_url: str = ""
    audit_forward_authorization: str = ""
    #: The controls of the notice with request hooks, in order (plugins/<name>/); write_guard,
    #: explain, balp and alerts always load (gateway/hooks.py REQUIRED_PLUGINS).
    plugins: tuple[str, ...] = ("purpose", "break_glass", "grants", "care", "seal", "watermark")
    # --- the notice's controls (plugins/) ----------------------------------------------------
    #: Key for research pseudonyms (HMAC-SHA256): stable across requests, never sent to clients.
    #: At least 32 characters; rotate it and every pseudonym changes.
    pseudonym_secret: str = ""
    #: How long a paging cursor (the gateway's `next` link of a search page) can be followed.
    paging_cursor_ttl_seconds: float = 900.0
    #: Upstream pages the gateway reads ahead to fill a page with visible entries and to confirm a
    #: further visible entry exists before it offers a `next` link (no paging oracle, I.4).
    paging_lookahead_pages: int = 4
    #: How long a patient's departments and care team (looked up upstream) are reused.
    patient_context_ttl_seconds: float = 30.0
    #: Key of the watermarks' MAC (II.2 数字水印); at least 32 characters when the watermark plugin is on.
    watermark_secret: str = ""
    #: Elements whose free text carries the invisible watermark (dotted paths through lists).
    watermark_fields: tuple[str, ...] = ("text.div", "note.text", "valueString", "description", "conclusion")
    #: I.4: letters or digits (a Chinese character is a letter) a break-glass reason must have,
    #: once whitespace and invisible characters are taken out.
    break_glass_min_reason_chars: int = 4
    # --- admin API: which roles may do what ---------------------------------------------------
    admin_seal_roles: tuple[str, ...] = ("records_officer", "security_officer")
    admin_grant_roles: tuple[str, ...] = ("security_officer", "records_officer", "admin")
    admin_explain_roles: tuple[str, ...] = ("security_officer",)
    #: Who may search and export the audit trail (II.2); add records_officer for patient requests.
    admin_audit_roles: tuple[str, ...] = ("security_officer", "inspector")

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]") or "127.0.0.1"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


def _field_type(f: dataclasses.Field) -> type:
    hints = typing.get_type_hints(Settings)
    return hints[f.name]


def _coerce(key: str, raw: object, target: object, *, from_env: bool) -> object:
    origin = typing.get_origin(target)
    try:
        if target is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if target is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(f"expected a whole number, got {raw!r}")
            return int(raw)  # type: ignore[call-overload]
        if target is float:
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            value = float(raw)  # type: ignore[arg-type]
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {raw!r}")
            return value
        if target is str:
            if not isinstance(raw, str):
                raise ValueError(f"expected text, got {type(raw).__name__}")
            return raw
        if origin is tuple:
            if isinstance(raw, str):
                items = [p.strip() for p in raw.split(",") if p.strip()] if from_env or raw else []
            elif isinstance(raw, list):
                items = [str(p) for p in raw]
            else:
                raise ValueError("expected a list (TOML array, or comma-separated in the environment)")
            return tuple(items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {key}: {exc}") from None
    raise ConfigError(f"config key {key}: unsupported type {target}")  # pragma: no cover


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file (if any), apply ``EMRGUARD_*`` overrides, validate, return Settings."""
    env = os.environ if environ is None else environ
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    values: dict[str, object] = {}
    known = {f.name: f for f in dataclasses.fields(Settings)}
    if path:
        try:
            with open(path, "rb") as fh:
                file_values = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file '{path}' does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file '{path}' is not valid TOML: {exc}") from None
        for key, raw in file_values.items():
            if key in REMOVED_KEYS:
                raise ConfigError(f"config file '{path}': key '{key}' was removed: {REMOVED_KEYS[key]}")
            if key not in known:
                raise ConfigError(f"config file '{path}': unknown key '{key}'")
            values[key] = _coerce(f"'{key}'", raw, _field_type(known[key]), from_env=False)
    for key, f in known.items():
        env_key = ENV_PREFIX + key.upper()
        if env_key in env:
            values[key] = _coerce(f"'{key}' ({env_key})", env[env_key], _field_type(f), from_env=True)
    # A misspelt variable (EMRGUARD_UPSTREM_URL) must not be silently ignored.
    expected = {ENV_PREFIX + k.upper() for k in known} | {ENV_PREFIX + k for k in NON_SETTING_VARIABLES}
    for key, why in REMOVED_KEYS.items():
        if ENV_PREFIX + key.upper() in env:
            raise ConfigError(f"environment variable {ENV_PREFIX}{key.upper()} was removed: {why}")
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in expected)
    if unknown:
        raise ConfigError(f"unknown environment variable {unknown[0]}: no config key of that name")
    settings = Settings(**values)  # type: ignore[arg-type]
    validate(settings)
    return settings


def _check_url(key: str, value: str, *, required: bool) -> None:
    if not value:
        if required:
            raise ConfigError(
                f"config key '{key}' is required (set it in the TOML file or {ENV_PREFIX}{key.upper()})"
            )
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"config key '{key}': '{value}' is not an http(s) URL")


def validate(s: Settings) -> None:
    """Raise ConfigError naming the first key that is wrong."""
    host, sep, port = s.listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"config key 'listen': '{s.listen}' is not host:port")
    _check_url("upstream_url", s.upstream_url, required=True)
    _check_url("public_base_url", s.public_base_url, required=False)
    _check_url("audit_forward_url", s.audit_forward_url, required=False)
    if not s.jwks_url and not s.jwt_public_key_files:
        raise ConfigError(
            "config key 'jwks_url': set it or 'jwt_public_key_files' (operator tokens must be verified, II.1)"
        )
    _check_url("jwks_url", s.jwks_url, required=False)
    for key_file in s.jwt_public_key_files:
        if not Path(key_file).is_file():
            raise ConfigError(f"config key 'jwt_public_key_files': '{key_file}' is not a readable file")
    if not s.issuer:
        raise ConfigError("config key 'issuer' is required: tokens from any other issuer must be refused")
    if not s.audience:
        raise ConfigError(
            "config key 'audience' is required: tokens minted for other services must be refused"
        )
    bad_alg = [a for a in s.jwt_algorithms if a not in ALLOWED_JWT_ALGORITHMS]
    if bad_alg or not s.jwt_algorithms:
        raise ConfigError(
            f"config key 'jwt_algorithms': {bad_alg or 'empty'} not allowed; use asymmetric algorithms from "
            f"{sorted(ALLOWED_JWT_ALGORITHMS)} (never 'none', never HMAC)"
        )
    if s.roles_claim_format not in ("array", "space-separated"):
        raise ConfigError(
            f"config key 'roles_claim_format': '{s.roles_claim_format}' is not 'array' or 'space-separated'"
        )
    if s.jwks_cache_seconds <= 0 or s.jwks_cache_seconds > 3600:
        raise ConfigError("config key 'jwks_cache_seconds' must be greater than 0 and at most 3600")
    if s.policy_engine not in POLICY_ENGINES:
        raise ConfigError(
            f"config key 'policy_engine': '{s.policy_engine}' is not one of {list(POLICY_ENGINES)}"
        )
    if s.policy_engine == "opa":
        _check_url("opa_url", s.opa_url, required=True)
    elif s.policy_dir and not Path(s.policy_dir).is_dir():
        raise ConfigError(f"config key 'policy_dir': '{s.policy_dir}' is not a directory")
    # Each answer kept is up to a few kB (a 100-entry response's verdicts): the bound is on memory.
    if not 0 <= s.decision_cache_size <= 1_000_000:
        raise ConfigError("config key 'decision_cache_size' must be between 0 (no cache) and 1000000")
    for key in (
        "upstream_timeout",
        "upstream_connect_timeout",
        "policy_timeout_seconds",
        "patient_context_ttl_seconds",
        "paging_cursor_ttl_seconds",
        "store_busy_timeout_seconds",
    ):
        if getattr(s, key) <= 0:
            raise ConfigError(f"config key '{key}' must be greater than 0")
    for key in ("max_request_bytes", "max_response_bytes", "upstream_pool_size", "audit_backlog_max"):
        if getattr(s, key) <= 0:
            raise ConfigError(f"config key '{key}' must be greater than 0")
    # aiohttp's own parser limits are set above these (gateway/app.py), so they stay bounded too.
    for key, most in (("max_url_bytes", 1 << 20), ("max_header_bytes", 1 << 20), ("max_header_count", 1000)):
        if not 0 < getattr(s, key) <= most:
            raise ConfigError(f"config key '{key}' must be greater than 0 and at most {most}")
    if not 0 < s.break_glass_min_reason_chars <= MAX_BREAK_GLASS_REASON:
        raise ConfigError(
            f"config key 'break_glass_min_reason_chars' must be between 1 and {MAX_BREAK_GLASS_REASON} "
            "(an emergency access must say why, I.4)"
        )
    if not s.db:
        raise ConfigError("config key 'db' is required (SQLite file path)")
    if "watermark" in s.plugins and len(s.watermark_secret) < 32:
        raise ConfigError(
            "config key 'watermark_secret': at least 32 characters are required when the watermark plugin is on (II.2)"
        )
    if len(s.pseudonym_secret) < 32:
        raise ConfigError(
            "config key 'pseudonym_secret': at least 32 characters are required (research pseudonyms, I.4); "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    # II.2 tamper evidence: without signed checkpoints a deleted or rewritten tail of the trail goes
    # unnoticed, so the gateway does not start without a signing key unless told so in plain words.
    if s.audit_checkpoints and not s.audit_signing_key_file:
        raise ConfigError(
            "config key 'audit_signing_key_file' is required: the audit chain's head is signed into "
            "'audit_checkpoint_file' so that deleting or rewriting the newest records is detected (II.2). "
            "Create the key with `emrguard keys init --dir DIR` and add the two lines it prints "
            "(audit_signing_key_file, audit_checkpoint_file) to the config; or set audit_checkpoints = false "
            "to run deliberately without signed checkpoints"
        )
    if not s.audit_checkpoints and s.audit_signing_key_file:
        raise ConfigError(
            "config key 'audit_checkpoints' is false but 'audit_signing_key_file' is set: remove one of them "
            "(checkpoints are either on, with a key, or deliberately off)"
        )
    if s.audit_signing_key_file:
        if not Path(s.audit_signing_key_file).is_file():
            raise ConfigError(
                f"config key 'audit_signing_key_file': '{s.audit_signing_key_file}' is not a readable file "
                "(`emrguard keys init --dir DIR` creates one)"
            )
        from gateway.audit.chain import load_private_key

        try:
            load_private_key(s.audit_signing_key_file)
        except (ValueError, TypeError, OSError):
            raise ConfigError(
                f"config key 'audit_signing_key_file': '{s.audit_signing_key_file}' is not an Ed25519 private key "
                "(PEM, unencrypted; `emrguard keys init --dir DIR` creates one)"
            ) from None
        if not s.audit_checkpoint_file:
            raise ConfigError(
                "config key 'audit_checkpoint_file' is required with 'audit_signing_key_file' "
                "(a file outside the database, e.g. on another volume)"
            )
    if not s.audit_log:
        raise ConfigError("config key 'audit_log' is required (a file path, or '-' for stdout)")
    if s.audit_retention_days < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"config key 'audit_retention_days' must be at least {MIN_RETENTION_DAYS}: network logs are kept at "
            "least six months (网络安全法 第二十一条, cited by the notice)"
        )
    if not 1 <= s.paging_lookahead_pages <= 50:
        raise ConfigError("config key 'paging_lookahead_pages' must be between 1 and 50")


__all__ = ["ConfigError", "Settings", "load_settings", "validate"]
