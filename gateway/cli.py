"""``emrguard``: the gateway's command line.

emrguard serve [--config FILE]            run the gateway
emrguard audit verify | search            the audit trail (II.2)
emrguard watermark decode FILE            trace a leaked file to its disclosures (II.2)

Development tokens are minted by the checkout's devtools (``python -m devtools.tokens``).
"""

from __future__ import annotations

import argparse
import logging
import sys

import structlog

from gateway.config import ConfigError, load_settings


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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    print(
        f"emrguard: serving FHIR at http://{settings.listen}/fhir -> {settings.upstream_url} "
        f"(policy engine: {settings.policy_engine}"
        f"{', policies: ' + str(policy_dir(settings.policy_dir)) if settings.policy_engine == 'embedded' else ''}"
        f", store: {settings.db})",
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


def _audit_db_path(path: str | None) -> str:
    """The audit store named by --db or $EMRGUARD_DB; exit 2 with a clear message if it is absent."""
    import os

    db = path or os.environ.get("EMRGUARD_DB", "var/emrguard.sqlite")
    if not os.path.exists(db):
        print(f"emrguard: no audit store at {db}", file=sys.stderr)
        raise SystemExit(2)
    return db


def _open_audit_db(path: str | None) -> object:
    import sqlite3

    return sqlite3.connect(f"file:{_audit_db_path(path)}?mode=ro", uri=True)


def _audit_search(args: argparse.Namespace) -> int:
    """Audit records as JSON lines, newest first (II.2 可查询); --all follows every page."""
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
    while True:
        page = audit_search.run(db, query)  # type: ignore[arg-type]
        for record in page["records"]:
            out = to_audit_event(record) if args.balp else record
            sys.stdout.buffer.write(orjson.dumps(out) + b"\n")
        if not args.all or page["next_cursor"] is None:
            return 0
        query.cursor = page["next_cursor"]


def _audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 if the audit chain and its checkpoints are intact, 1 if not (II.2)."""
    import json
    import os

    from gateway.audit.chain import load_public_key, verify

    db = _audit_db_path(args.db)
    checkpoints = args.checkpoints or os.environ.get("EMRGUARD_AUDIT_CHECKPOINT_FILE") or None
    key_file = args.public_key or os.environ.get("EMRGUARD_AUDIT_SIGNING_KEY_FILE") or None
    result = verify(db, checkpoints, load_public_key(key_file) if key_file else None)
    print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    if not result.ok:
        print(
            f"emrguard: audit trail BROKEN at record {result.first_broken_seq}: {result.problems[0]}",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


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
    ver.set_defaults(func=_audit_verify)
    srch = audit_sub.add_parser("search", help="audit records as JSON lines, newest first")
    srch.add_argument("--db", help="SQLite store (default: $EMRGUARD_DB)")
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
