"""``emrguard``: the gateway's command line.

emrguard serve [--config FILE]            run the gateway
emrguard keys init [--dir DIR]            make the audit signing key (II.2 tamper evidence)
emrguard audit verify | search | archive  the audit trail (II.2); archive: 网络安全法 第二十一条
emrguard watermark decode FILE            trace a leaked file to its disclosures (II.2)

Development tokens are minted by the checkout's devtools (``python -m devtools.tokens``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import structlog

from gateway.config import ConfigError, Settings, load_settings
from gateway.diagnostics import DiagnosticsLogger

CHECKPOINTS_OFF_WARNING = """\
emrguard: WARNING ──────────────────────────────────────────────────────────────────────────────
emrguard: WARNING  audit checkpoints are OFF (audit_checkpoints = false): the head of the audit
emrguard: WARNING  chain is not signed, so deleting or rewriting the newest records would go
emrguard: WARNING  unnoticed by `emrguard audit verify` (II.2 tamper evidence).
emrguard: WARNING  Turn them on: `emrguard keys init --dir DIR`, then set the two lines it prints.
emrguard: WARNING ──────────────────────────────────────────────────────────────────────────────"""


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.app import create_app
    from gateway.policy.files import policy_dir

    try:
        settings = load_settings(args.config)
        app = create_app(settings)
    except ConfigError as exc:
        print(f"emrguard: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    structlog.configure(
        # The request id comes from the context (gateway/audited.py binds it), never passed by hand.
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda *args: DiagnosticsLogger(sys.stderr),
    )
    print(
        f"emrguard: serving FHIR at http://{settings.listen}/fhir -> {settings.upstream_url} "
        f"(policy engine: {settings.policy_engine}"
        f"{', policies: ' + str(policy_dir(settings.policy_dir)) if settings.policy_engine == 'embedded' else ''}"
        f", store: {settings.db}"
        f", checkpoints: {settings.audit_checkpoint_file if settings.audit_checkpoints else 'OFF'})",
        file=sys.stderr,
    )
    if not settings.audit_checkpoints:
        # Deliberately off (the config said so): said loudly, on the console and in the log stream.
        print(CHECKPOINTS_OFF_WARNING, file=sys.stderr)
        structlog.get_logger("emrguard").warning(
            "audit_checkpoints_off", detail="audit_checkpoints = false: the audit chain's head is not signed"
        )
    elif os.stat(settings.audit_signing_key_file).st_mode & 0o077:
        print(
            f"emrguard: WARNING: the audit signing key {settings.audit_signing_key_file} can be read by other "
            "users (chmod 600 it): whoever reads it can sign a rewritten trail",
            file=sys.stderr,
        )
    # The app carries aiohttp's parser limits (handler_args, gateway/app.py parser_limits), raised
    # above max_url_bytes / max_header_bytes / max_header_count so those are answered audited.
    web.run_app(app, host=settings.listen_host, port=settings.listen_port, print=None, access_log=None)
    return 0


def _dev_token(args: argparse.Namespace) -> int:
    """Removed from the product: development tokens are minted by the checkout's devtools/."""
    print(
        "emrguard: 'dev-token' is no longer part of the installed gateway (development keys never ship).\n"
        "In the checkout run:  .venv/bin/python -m devtools.tokens --role nurse   (or: make token ROLE=nurse)",
        file=sys.stderr,
    )
    return 2


def _keys_init(args: argparse.Namespace) -> int:
    """Make the audit signing key (Ed25519, PEM, mode 0600) and print the config lines (II.2)."""
    from pathlib import Path

    from gateway.audit.checkpoints import KeyExists, create_signing_key

    folder = Path(args.dir)
    checkpoint_file = args.checkpoint_file or str(folder.parent / "audit-checkpoints.jsonl")
    try:
        private, public, kid = create_signing_key(folder, force=args.force)
    except KeyExists as exc:
        print(
            f"emrguard: {exc}: not overwritten. A new key cannot sign for the checkpoints and archive segments "
            "the old one signed (keep its public half to verify them); to replace it anyway: --force",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"emrguard: cannot write the key: {exc}", file=sys.stderr)
        return 2
    print(
        f"emrguard: wrote {private} (the audit signing key, mode 0600: keep it secret, back it up) and "
        f"{public} (its public half, for `emrguard audit verify --public-key`); key id {kid}",
        file=sys.stderr,
    )
    print(
        f"# EMR Guard audit signing key {kid}: add to the gateway's TOML file (paths relative to where it runs)\n"
        f'audit_signing_key_file = "{private}"\n'
        f'audit_checkpoint_file = "{checkpoint_file}"\n'
        f"# or as environment variables:\n"
        f"#   EMRGUARD_AUDIT_SIGNING_KEY_FILE={private}\n"
        f"#   EMRGUARD_AUDIT_CHECKPOINT_FILE={checkpoint_file}"
    )
    return 0


def _audit_db_path(path: str | None) -> str:
    """The audit store named by --db or $EMRGUARD_DB; exit 2 with a clear message if it is absent."""
    db = path or os.environ.get("EMRGUARD_DB", "var/emrguard.sqlite")
    if not os.path.exists(db):
        print(f"emrguard: no audit store at {db}", file=sys.stderr)
        raise SystemExit(2)
    return db


def _open_audit_db(path: str | None) -> object:
    import sqlite3

    return sqlite3.connect(f"file:{_audit_db_path(path)}?mode=ro", uri=True)


def _archive_dir(path: str | None) -> str:
    """The archive named by --archive-dir, $EMRGUARD_AUDIT_ARCHIVE_DIR, or the setting's default."""
    return path or os.environ.get("EMRGUARD_AUDIT_ARCHIVE_DIR") or Settings.audit_archive_dir


def _audit_search(args: argparse.Namespace) -> int:
    """Audit records as JSON lines, newest first (II.2 可查询), the live store then its archive
    (records moved there after the retention window, 网络安全法 第二十一条); --all: every one."""
    import itertools

    import orjson

    from gateway.audit import search as audit_search
    from plugins.balp.event import to_audit_event

    db = _open_audit_db(args.db)
    try:
        query = audit_search.AuditQuery(
            patient=args.patient,
            operator=args.operator,
            time_from=args.time_from,
            time_to=args.time_to,
            purpose=args.purpose,
            decision=args.decision,
            resource_type=args.resource_type,
            resource_id=args.resource_id,
            request_id=args.request_id,
            limit=args.limit,
        )
    except audit_search.TimeError as exc:
        print(f"emrguard: {exc} (e.g. 2026-12-01T08:00:00Z or 2026-12-01T16:00:00+08:00)", file=sys.stderr)
        return 2
    found = audit_search.iter_all(db, query, _archive_dir(args.archive_dir))  # type: ignore[arg-type]
    for record in found if args.all else itertools.islice(found, args.limit):
        out = to_audit_event(record) if args.balp else record
        sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 if the audit chain — archive segments and live store — and its checkpoints are
    intact, 1 if not (II.2)."""
    import json

    from gateway.audit.chain import load_public_key, verify

    db = _audit_db_path(args.db)
    checkpoints = args.checkpoints or os.environ.get("EMRGUARD_AUDIT_CHECKPOINT_FILE") or None
    key_file = args.public_key or os.environ.get("EMRGUARD_AUDIT_SIGNING_KEY_FILE") or None
    result = verify(
        db, checkpoints, load_public_key(key_file) if key_file else None, _archive_dir(args.archive_dir)
    )
    print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    if not result.ok:
        print(
            f"emrguard: audit trail BROKEN at record {result.first_broken_seq}: {result.problems[0]}",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


def _archive_settings(args: argparse.Namespace) -> Settings:
    """The gateway's audit settings: its config file (--config or $EMRGUARD_CONFIG, validated as
    serve reads it), else the EMRGUARD_* variables and the defaults; then the command's options."""
    import dataclasses

    if args.config or os.environ.get("EMRGUARD_CONFIG"):
        settings = load_settings(args.config)
    else:
        values: dict[str, object] = {}
        for key in ("db", "audit_archive_dir", "audit_signing_key_file", "audit_checkpoint_file"):
            if f"EMRGUARD_{key.upper()}" in os.environ:
                values[key] = os.environ[f"EMRGUARD_{key.upper()}"]
        days = os.environ.get("EMRGUARD_AUDIT_RETENTION_DAYS")
        if days is not None:
            try:
                values["audit_retention_days"] = int(days)
            except ValueError:
                raise ConfigError(
                    f"config key 'audit_retention_days' (EMRGUARD_AUDIT_RETENTION_DAYS): {days!r} is not a whole number"
                ) from None
        settings = Settings(**values)  # type: ignore[arg-type]
    overrides = {
        "db": args.db,
        "audit_archive_dir": args.archive_dir,
        "audit_signing_key_file": args.signing_key,
        "audit_checkpoint_file": args.checkpoints,
    }
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _audit_archive(args: argparse.Namespace) -> int:
    """Move records older than the retention window into signed archive segments (网络安全法 第二十一条:
    network logs kept at least six months; II.2). Exit 0 done, 1 not safe (nothing lost), 2 refused."""
    import json

    from gateway.audit import archive
    from gateway.audit.chain import load_private_key
    from gateway.audit.search import TimeError

    try:
        settings = _archive_settings(args)
    except ConfigError as exc:
        print(f"emrguard: configuration error: {exc}", file=sys.stderr)
        return 2
    if not settings.audit_signing_key_file:
        print(
            "emrguard: the audit signing key signs the segments: set audit_signing_key_file "
            "($EMRGUARD_AUDIT_SIGNING_KEY_FILE) or --signing-key (`emrguard keys init` creates one)",
            file=sys.stderr,
        )
        return 2
    try:
        key = load_private_key(settings.audit_signing_key_file)
        report = archive.archive(
            _audit_db_path(settings.db),
            settings.audit_archive_dir,
            key,
            retention_days=settings.audit_retention_days,
            before=args.before,
            checkpoint_file=settings.audit_checkpoint_file or None,
            segment_records=args.segment_records,
            dry_run=args.dry_run,
        )
    except archive.RetentionError as exc:
        print(f"emrguard: {exc}", file=sys.stderr)
        return 2
    except TimeError as exc:
        print(f"emrguard: {exc} (e.g. 2026-06-01 or 2026-06-01T00:00:00+08:00)", file=sys.stderr)
        return 2
    except (archive.ArchiveError, OSError, ValueError) as exc:
        print(f"emrguard: audit archive stopped: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    return 0


def _watermark_decode(args: argparse.Namespace) -> int:
    """Trace watermarks in a file or pasted text to their disclosures (II.2); exit 0 if one was traced."""
    import json
    import os
    import sqlite3

    from plugins.watermark.decode import decode, read_input

    secret = args.secret or os.environ.get("EMRGUARD_WATERMARK_SECRET", "")
    if not secret:
        print(
            "emrguard: the watermark secret is needed (--secret or $EMRGUARD_WATERMARK_SECRET)",
            file=sys.stderr,
        )
        return 2
    if (args.text is None) == (args.file is None):
        print("emrguard: give a FILE (or - for stdin) or --text, not both", file=sys.stderr)
        return 2
    db = _audit_db_path(args.db)
    try:
        if args.text is not None:
            text = args.text
        elif args.file == "-":
            text = read_input(sys.stdin.buffer.read())
        else:
            with open(args.file, "rb") as fh:
                text = read_input(fh.read())
        report, traced = decode(text, secret, db)
    except (OSError, sqlite3.Error) as exc:
        print(f"emrguard: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0 if traced else 1


ARCHIVE_DIR_HELP = "archive segments (default: $EMRGUARD_AUDIT_ARCHIVE_DIR, else var/audit-archive)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="emrguard", description="EMR Guard: a FHIR gateway for 国卫办医政函〔2025〕262号"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config", help="TOML config file (default: $EMRGUARD_CONFIG); EMRGUARD_* variables override it"
    )
    serve.set_defaults(func=_serve)
    sub.add_parser("dev-token", help="removed: use `python -m devtools.tokens` in the checkout")
    keys = sub.add_parser("keys", help="the gateway's own keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    kinit = keys_sub.add_parser(
        "init", help="make the audit signing key (Ed25519) that signs checkpoints and archive segments"
    )
    kinit.add_argument("--dir", default="var/keys", help="where to write it (default: var/keys)")
    kinit.add_argument(
        "--checkpoint-file",
        help="the checkpoint file to print in the config lines (default: DIR/../audit-checkpoints.jsonl)",
    )
    kinit.add_argument(
        "--force",
        action="store_true",
        help="replace an existing key (old signatures then verify only with the old public key)",
    )
    kinit.set_defaults(func=_keys_init)
    audit = sub.add_parser("audit", help="the audit trail (II.2)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    ver = audit_sub.add_parser(
        "verify", help="check the hash chain and the signed checkpoints; names the first broken record"
    )
    ver.add_argument("--db", help="SQLite store (default: $EMRGUARD_DB)")
    ver.add_argument("--checkpoints", help="checkpoint file (default: $EMRGUARD_AUDIT_CHECKPOINT_FILE)")
    ver.add_argument(
        "--public-key", help="Ed25519 public (or private) key PEM (default: $EMRGUARD_AUDIT_SIGNING_KEY_FILE)"
    )
    ver.add_argument("--archive-dir", help=ARCHIVE_DIR_HELP)
    ver.set_defaults(func=_audit_verify)
    srch = audit_sub.add_parser(
        "search", help="audit records as JSON lines, newest first (live store, then archive)"
    )
    srch.add_argument("--db", help="SQLite store (default: $EMRGUARD_DB)")
    srch.add_argument("--archive-dir", help=ARCHIVE_DIR_HELP)
    for name in ("patient", "operator", "purpose", "decision", "resource-type", "resource-id", "request-id"):
        srch.add_argument(f"--{name}")
    srch.add_argument(
        "--from", dest="time_from", help="time with its offset (Z, +08:00; none = UTC), inclusive"
    )
    srch.add_argument("--to", dest="time_to", help="time with its offset (Z, +08:00; none = UTC), exclusive")
    srch.add_argument("--limit", type=int, default=100)
    srch.add_argument("--all", action="store_true", help="follow every page (bulk export)")
    srch.add_argument("--balp", action="store_true", help="as FHIR AuditEvents (IHE BALP), NDJSON")
    srch.set_defaults(func=_audit_search)
    arch = audit_sub.add_parser(
        "archive",
        help="move records older than audit_retention_days (at least 180: 网络安全法 第二十一条) into signed segments",
    )
    arch.add_argument(
        "--config", help="the gateway's TOML config (default: $EMRGUARD_CONFIG, else EMRGUARD_* variables)"
    )
    arch.add_argument("--db", help="SQLite store (default: the config's db)")
    arch.add_argument("--archive-dir", help="where the segments go (default: the config's audit_archive_dir)")
    arch.add_argument(
        "--signing-key", help="Ed25519 private key PEM (default: the config's audit_signing_key_file)"
    )
    arch.add_argument(
        "--checkpoints", help="checkpoint file the records are checked against (default: the config's)"
    )
    arch.add_argument(
        "--before", help="archive only records before this time (never inside the retention window)"
    )
    arch.add_argument(
        "--segment-records", type=int, default=100_000, help="records per segment (default 100000)"
    )
    arch.add_argument("--dry-run", action="store_true", help="say what would be moved; change nothing")
    arch.set_defaults(func=_audit_archive)
    wm = sub.add_parser("watermark", help="digital watermarks on disclosed records (II.2)")
    wm_sub = wm.add_subparsers(dest="watermark_command", required=True)
    dec = wm_sub.add_parser(
        "decode", help="trace the watermarks in a file (FHIR JSON, NDJSON, pasted text) to their disclosures"
    )
    dec.add_argument("file", nargs="?", metavar="FILE|-", help="the file to examine; - reads stdin")
    dec.add_argument("--text", help="examine this text instead of a file")
    dec.add_argument("--secret", help="the watermark secret (default: $EMRGUARD_WATERMARK_SECRET, preferred)")
    dec.add_argument("--db", help="SQLite store (default: $EMRGUARD_DB)")
    dec.set_defaults(func=_watermark_decode)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dev-token"]:  # whatever options follow: say where it went
        return _dev_token(argparse.Namespace())
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
