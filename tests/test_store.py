"""The audit store on a real SQLite file: group commit, fail closed, findable by patient (II.2)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.store import Store, StoreClosed


def record(i: int, patient: str = "Patient/p1") -> dict:
    return {
        "request_id": f"req-{i}",
        "time": f"2026-12-01T00:00:{i % 60:02d}Z",
        "operator": f"op-{i % 3}",
        "purpose": "TREAT",
        "interaction": "read",
        "resource_type": "Patient",
        "decision": "allow",
        "status": 200,
        "patients_targeted": [patient],
        "patients_disclosed": [patient],
    }


async def test_concurrent_records_are_all_committed_and_share_commits(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "a.sqlite"))
    await store.start()
    batches: list[int] = []
    original = store._write_batch

    def spy(records: list) -> None:
        batches.append(len(records))
        original(records)

    store._write_batch = spy  # type: ignore[method-assign]
    await asyncio.gather(*(store.insert_audit(record(i)) for i in range(300)))
    await store.close()
    # A second connection (another process could do the same) sees every record.
    with sqlite3.connect(tmp_path / "a.sqlite") as db:
        assert db.execute("SELECT count(*) FROM audit").fetchone() == (300,)
        assert db.execute("SELECT count(*) FROM audit_patient WHERE patient = 'Patient/p1'").fetchone() == (
            600,
        )
    assert sum(batches) == 300
    assert len(batches) < 300  # grouped: fewer commits than records


async def test_a_bad_record_fails_only_its_own_request(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "b.sqlite"))
    await store.start()
    await store.insert_audit(record(1))
    results = await asyncio.gather(
        store.insert_audit(record(1)),  # same request id again: refused by the table
        store.insert_audit(record(2)),
        store.insert_audit(record(3)),
        return_exceptions=True,
    )
    assert isinstance(results[0], sqlite3.IntegrityError) and results[1:] == [None, None]
    # A record that cannot even be encoded (a lone surrogate from an undecodable header).
    bad = record(4)
    bad["user_agent"] = "evil\udcff"
    with pytest.raises(TypeError):
        await store.insert_audit(bad)
    await store.insert_audit(record(5))
    assert len(await store.audit_records(limit=10)) == 4
    await store.close()
    with pytest.raises(StoreClosed):
        await store.insert_audit(record(2))


async def test_records_found_by_patient_and_operator(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.sqlite"))
    await store.start()
    for i in range(10):
        await store.insert_audit(record(i, patient=f"Patient/p{i % 2}"))
    by_patient = await store.audit_records(patient="Patient/p1")
    assert [r["request_id"] for r in by_patient] == ["req-9", "req-7", "req-5", "req-3", "req-1"]
    by_both = await store.audit_records(patient="Patient/p1", operator="op-0")
    assert [r["request_id"] for r in by_both] == ["req-9", "req-3"]
    await store.close()
