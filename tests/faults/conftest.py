"""The fault tests (II.2: storage faults never lose a record silently): what a client sees, what the
trail holds, and how long recovery takes, for a store locked by another process, a full disk, a
failing log sink and SIGKILL during a batch. Each test asserts no data without a record, no record
without its request, and recovery; the measured times are printed (``pytest -s``)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.audit.chain import load_public_key, verify

#: Storage faults do not depend on the upstream: these tests run against the Medplum dev server.
MEDPLUM = pytest.mark.parametrize("fhir_server", ["medplum"], indirect=True)


def stored(db: Path | str) -> dict[str, dict[str, Any]]:
    """request id -> its committed record; fails if a request id has more than one."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = [orjson.loads(r[0]) for r in conn.execute("SELECT record FROM audit ORDER BY seq")]
    by_id = {r["request_id"]: r for r in rows}
    assert len(by_id) == len(rows), "a request has more than one record"
    return by_id


def chain_ok(db: Path | str, checkpoints: str | None = None, key: str | None = None) -> None:
    result = verify(db, checkpoints, load_public_key(key) if key else None)
    assert result.ok, result.problems


def no_patient_data(body: str, *names: str) -> None:
    """A refusal's body: an OperationOutcome naming the audit rule, nothing of any patient."""
    doc = orjson.loads(body)
    assert doc["resourceType"] == "OperationOutcome"
    assert "audit.unavailable" in body
    for name in names:
        assert name not in body


def measured(what: str, seconds: float) -> None:
    print(f"\n[fault] {what}: {seconds:.2f} s")
