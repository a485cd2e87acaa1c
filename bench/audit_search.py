"""Audit search at scale: fill a store with N chained records, then time the searches an auditor runs.

    python -m bench.audit_search --records 1000000 [--db PATH]

Records are realistic (3,000 operators, 200,000 patients, 30 days, one in ten a refusal) and
chained exactly as the gateway chains them. Each query is run cold once and warm 20 times; the
median warm time is reported. Output: JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from gateway.audit.chain import GENESIS, canonical, chain_hash
from gateway.audit.search import AuditQuery, run
from gateway.store import SCHEMA


def fill(db_path: Path, n: int, seed: int = 262) -> float:
    rng = random.Random(seed)
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")  # bulk load only; the gateway writes with FULL
    db.executescript(SCHEMA)
    head = GENESIS
    t0 = time.perf_counter()
    batch = 20_000
    for start in range(0, n, batch):
        rows, links = [], []
        for i in range(start, min(n, start + batch)):
            patient = f"Patient/p{rng.randrange(200_000)}"
            secs = i * 30 * 86400 // n
            record = {
                "request_id": f"{i:032x}",
                "time": f"2026-11-{1 + secs // 86400:02d}T{secs % 86400 // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}.000+00:00",
                "operator": f"op-{rng.randrange(3000)}",
                "roles": ["nurse"],
                "dept": "cardiology",
                "purpose": rng.choice(["TREAT", "TREAT", "TREAT", "TRAIN", "HRESCH"]),
                "client_address": "10.0.0.1",
                "method": "GET",
                "path": "Observation",
                "query": f"subject={patient}",
                "interaction": "search-type",
                "resource_type": rng.choice(["Observation", "Condition", "Patient", "MedicationRequest"]),
                "resource_id": None,
                "decision": "deny" if rng.random() < 0.1 else "allow",
                "status": 200,
                "patients_targeted": [patient],
                "patients_disclosed": [patient],
                "resources_disclosed": [f"Observation/o{i}"],
                "reasons": [],
                "latency_ms": 1.7,
                "policy_revision": "bench",
            }
            blob = canonical(record)
            prev, head = head, chain_hash(head, blob)
            rows.append(
                (
                    i + 1,
                    record["request_id"],
                    record["time"],
                    record["operator"],
                    record["purpose"],
                    record["interaction"],
                    record["resource_type"],
                    record["decision"],
                    200,
                    blob,
                    prev,
                    head,
                )
            )
            links += [(i + 1, patient, "targeted"), (i + 1, patient, "disclosed")]
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO audit (seq, request_id, time, operator, purpose, interaction, resource_type, decision,"
            " status, record, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        db.executemany("INSERT OR IGNORE INTO audit_patient (seq, patient, role) VALUES (?,?,?)", links)
        db.execute("COMMIT")
    db.close()
    return time.perf_counter() - t0


def timed(db: sqlite3.Connection, q: AuditQuery) -> dict[str, float]:
    t = time.perf_counter()
    first = run(db, q)
    cold = time.perf_counter() - t
    warm = []
    for _ in range(20):
        t = time.perf_counter()
        run(db, q)
        warm.append(time.perf_counter() - t)
    return {
        "cold_ms": round(cold * 1000, 3),
        "warm_median_ms": round(statistics.median(warm) * 1000, 3),
        "rows": len(first["records"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--db", help="reuse/keep this store (default: a temporary file, removed)")
    args = ap.parse_args(argv)
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="emrguard-audit-")) / "audit.sqlite"
    load_s = fill(path, args.records) if not path.exists() else None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    queries = {
        "by_patient": AuditQuery(patient="Patient/p4242", limit=100),
        "by_operator": AuditQuery(operator="op-1234", limit=100),
        "by_operator_and_day": AuditQuery(
            operator="op-1234", time_from="2026-11-12", time_to="2026-11-13", limit=100
        ),
        "by_patient_denied": AuditQuery(patient="Patient/p4242", decision="deny", limit=100),
        "time_window_page": AuditQuery(time_from="2026-11-20T10:00", time_to="2026-11-20T11:00", limit=100),
        "by_request_id": AuditQuery(request_id=f"{args.records // 2:032x}", limit=1),
    }
    out = {
        "records": args.records,
        "db_bytes": path.stat().st_size,
        "load_seconds": round(load_s, 1) if load_s else None,
        "queries": {name: timed(db, q) for name, q in queries.items()},
    }
    print(json.dumps(out, indent=2))
    if not args.db:
        db.close()
        for p in path.parent.iterdir():
            p.unlink()
        path.parent.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
