"""The store on a real SQLite file: audit group commit, fail closed, findable by patient (II.2);
grants (II.1), seals (I.4) and alerts (II.3)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from gateway.aio import stop_task
from gateway.audit.chain import verify
from gateway.store import Store, StoreClosed, StoreConflict, StoreInvalid, StoreNotFound
from gateway.store.backlog import Backlog, Item
from gateway.store.commit import STORE_UNAVAILABLE, StoreUnavailable
from plugins.grants.store import SCHEMA as GRANTS_SCHEMA
from plugins.grants.store import GrantStore
from plugins.seal.store import SCHEMA as SEALS_SCHEMA
from plugins.seal.store import SealStore
from tests.builders import audit_record

CONTROL_TABLES = (GRANTS_SCHEMA, SEALS_SCHEMA)


def record(i: int, patient: str = "Patient/p1") -> dict:
    return audit_record(
        i,
        request_id=f"req-{i}",
        operator=f"op-{i % 3}",
        patients_targeted=[patient],
        patients_disclosed=[patient],
    )


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
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert sorted(results[1:]) == [2, 3]  # each committed record's seq (the log follows by it)
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


# --- grants (II.1), seals (I.4), alerts (II.3) ----------------------------------------------------


def grant(operator: str = "u-student-001", **kw: object) -> dict:
    g = {
        "kind": "rotation",
        "operator": operator,
        "dept": "cardiology",
        "purposes": ["TREAT"],
        "start": "2026-03-01T00:00:00Z",
        "end": "2026-03-31T00:00:00Z",
        "scope": {"types": ["Observation"], "interactions": ["read"]},
    }
    g.update(kw)
    return g


@pytest.fixture
async def store(tmp_path: Path):
    s = Store(str(tmp_path / "state.sqlite"), CONTROL_TABLES)
    await s.start()
    yield s
    await s.close()


async def test_grants_created_listed_revoked_ii1(store: Store) -> None:
    created = await GrantStore(store).create_grant(grant(end="2026-03-31T23:59:59.5Z"), by="u-sec-1")
    assert len(created["id"]) == 32 and created["created_by"] == "u-sec-1"
    # II.1: a rotation never outlasts itself -- the end is stored exactly as given.
    assert created["end"] == "2026-03-31T23:59:59.5Z" and created["revoked_at"] is None
    assert created["scope"] == {"types": ["Observation"], "interactions": ["read"]}
    other = await GrantStore(store).create_grant(
        grant("u-vendor-1", kind="vendor", agreement="AG-1", supervisor="u-it"), "x"
    )
    assert await GrantStore(store).get_grant(created["id"]) == created
    assert await GrantStore(store).get_grant("0" * 32) is None
    assert {g["id"] for g in await GrantStore(store).list_grants()} == {created["id"], other["id"]}
    assert [g["id"] for g in await GrantStore(store).grants_for("u-student-001")] == [created["id"]]

    revoked = await GrantStore(store).revoke_grant(created["id"], by="u-sec-2", reason="rotation cut short")
    assert revoked["revoked_by"] == "u-sec-2" and revoked["revoke_reason"] == "rotation cut short"
    assert revoked["revoked_at"]
    assert await GrantStore(store).grants_for("u-student-001") == []  # the next request no longer sees it
    assert await GrantStore(store).list_grants("u-student-001") == []
    assert [g["id"] for g in await GrantStore(store).list_grants("u-student-001", include_revoked=True)] == [
        created["id"]
    ]
    with pytest.raises(StoreConflict, match="already revoked"):
        await GrantStore(store).revoke_grant(created["id"], by="u-sec-2", reason="again")
    with pytest.raises(StoreNotFound):
        await GrantStore(store).revoke_grant("f" * 32, by="u-sec-2", reason="no such grant")


@pytest.mark.parametrize(
    "bad",
    [
        {"start": "2026-03-31T00:00:00Z", "end": "2026-03-01T00:00:00Z"},  # end before start
        {"end": "2026-03-01T00:00:00Z"},  # empty period
        {"end": "not a time"},
        {"dept": None},  # a rotation is tied to a department
        {"kind": "vendor"},  # a vendor needs an agreement and a supervisor
        {"kind": "holiday"},
    ],
)
async def test_the_tables_refuse_grants_that_break_ii1(store: Store, bad: dict) -> None:
    with pytest.raises(StoreInvalid):
        await GrantStore(store).create_grant(grant(**bad), by="u-sec-1")
    assert await GrantStore(store).list_grants(include_revoked=True) == []


async def test_grants_for_is_one_indexed_query(store: Store) -> None:
    assert store._db is not None
    plan = " ".join(
        str(r[-1])
        for r in store._db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM grants WHERE operator = ? AND revoked_at IS NULL", ("x",)
        )
    )
    assert "grants_operator" in plan
    plan = " ".join(
        str(r[-1])
        for r in store._db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM seals WHERE unsealed_at IS NULL AND patient IN (?, ?)",
            ("a", "b"),
        )
    )
    assert "seals_active" in plan


async def test_seal_is_in_force_when_the_call_returns_i4(store: Store, tmp_path: Path) -> None:
    assert await SealStore(store).active_seals([]) == {}
    sealed = await SealStore(store).seal_patient(
        "Patient/p1", "media report", "CASE-7", ["u-doc-1"], by="u-rec-1"
    )
    assert sealed["authorised"] == ["u-doc-1"] and sealed["unsealed_at"] is None
    active = await SealStore(store).active_seals(["Patient/p1", "Patient/p2", "Patient/p1"])
    assert list(active) == ["Patient/p1"] and active["Patient/p1"]["id"] == sealed["id"]
    # Committed: another connection (another gateway process) sees it at once.
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        assert db.execute("SELECT count(*) FROM seals WHERE unsealed_at IS NULL").fetchone() == (1,)
    with pytest.raises(StoreConflict, match="already sealed"):
        await SealStore(store).seal_patient("Patient/p1", "again", "CASE-8", [], by="u-rec-2")

    lifted = await SealStore(store).unseal_patient("Patient/p1", by="u-rec-2", reason="event closed")
    assert lifted["id"] == sealed["id"] and lifted["unsealed_by"] == "u-rec-2"
    assert lifted["unseal_reason"] == "event closed"
    assert await SealStore(store).active_seals(["Patient/p1"]) == {}
    with pytest.raises(StoreNotFound, match="not sealed"):
        await SealStore(store).unseal_patient("Patient/p1", by="u-rec-2", reason="twice")

    again = await SealStore(store).seal_patient("Patient/p1", "new report", "CASE-9", [], by="u-rec-1")
    history = await SealStore(store).seal_history("Patient/p1")
    assert [s["id"] for s in history] == [again["id"], sealed["id"]]  # newest first
    assert [s["id"] for s in await SealStore(store).seal_history(active_only=True)] == [again["id"]]
    assert await SealStore(store).seal_history("Patient/other") == []


async def test_active_seals_of_many_patients(store: Store) -> None:
    for i in range(0, 2000, 100):
        await SealStore(store).seal_patient(f"Patient/p{i}", "r", "c", [], by="u")
    found = await SealStore(store).active_seals([f"Patient/p{i}" for i in range(2000)])  # > one IN (...) list
    assert sorted(found) == sorted(f"Patient/p{i}" for i in range(0, 2000, 100))


async def test_alerts_ride_the_audit_group_commit_ii3(store: Store) -> None:
    batches: list[list[str]] = []
    original = store._write_batch

    def spy(items: list) -> None:
        batches.append([i.kind for i in items])
        original(items)

    store._write_batch = spy  # type: ignore[method-assign]
    await asyncio.gather(
        *(store.insert_audit(record(i)) for i in range(50)),
        *(
            store.insert_alert(
                {
                    "event": "bulk-read",
                    "severity": "high",
                    "operator": "op-1",
                    "patients": [f"Patient/p{i}"],
                    "detail": {"n": i},
                    "request_id": f"req-{i}",
                }
            )
            for i in range(50)
        ),
    )
    assert sum(len(b) for b in batches) == 100 and len(batches) < 100
    assert any("alert" in b and "audit" in b for b in batches)  # one commit for both kinds
    alerts = await store.list_alerts(limit=10)
    assert len(alerts) == 10 and alerts[0]["seq"] > alerts[-1]["seq"]
    assert alerts[0]["event"] == "bulk-read" and alerts[0]["detail"] == {"n": 49}
    assert alerts[0]["patients"] == ["Patient/p49"] and alerts[0]["time"].endswith("Z")
    # An obligation passed as it is: severity defaulted, its other keys kept in detail.
    await store.insert_alert(
        {"type": "alert", "event": "seal-access", "rule": "seal.authorised", "request_id": "r"}
    )
    latest = (await store.list_alerts(limit=1))[0]
    assert latest["severity"] == "warning" and latest["detail"] == {"rule": "seal.authorised"}
    assert latest["patients"] == [] and latest["operator"] is None
    # A bad alert fails its own caller only.
    with pytest.raises(StoreInvalid):
        await store.insert_alert({"severity": "high"})
    with pytest.raises(TypeError):
        await store.insert_alert({"event": "x", "severity": "low", "detail": {"bad": object()}})
    assert len(await store.list_alerts(limit=1000)) == 51


async def test_concurrent_admin_changes_and_reads_stay_consistent(store: Store) -> None:
    # The same patient sealed by ten officers at once: exactly one seal, nine conflicts.
    results = await asyncio.gather(
        *(SealStore(store).seal_patient("Patient/race", "r", f"C-{i}", [], by=f"u-{i}") for i in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, dict) for r in results) == 1
    assert sum(isinstance(r, StoreConflict) for r in results) == 9
    # Grants, revocations, seal lookups and audit records interleaved on the one store thread.
    made = await asyncio.gather(
        *(GrantStore(store).create_grant(grant(f"op-{i % 5}"), by="u") for i in range(40))
    )
    await asyncio.gather(
        *(GrantStore(store).revoke_grant(g["id"], by="u", reason="r") for g in made[:20]),
        *(SealStore(store).active_seals(["Patient/race"]) for _ in range(20)),
        *(GrantStore(store).grants_for(f"op-{i}") for i in range(5)),
        *(store.insert_audit(record(i)) for i in range(100)),
    )
    live = [g for i in range(5) for g in await GrantStore(store).grants_for(f"op-{i}")]
    assert sorted(g["id"] for g in live) == sorted(g["id"] for g in made[20:])
    assert len(await SealStore(store).seal_history("Patient/race")) == 1
    assert len(await store.audit_records(limit=1000)) == 100


async def test_closed_store_refuses_state_calls(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "d.sqlite"), CONTROL_TABLES)
    await s.start()
    await s.close()
    with pytest.raises(StoreClosed):
        await SealStore(s).active_seals(["Patient/p1"])
    with pytest.raises(StoreClosed):
        await s.insert_alert({"event": "x", "severity": "low"})


# --- storage faults: bounded waits, the backlog, the spill file (II.2), the outage alert (II.3) ---


async def test_a_locked_store_bounds_the_wait_and_commits_the_backlog_in_order(tmp_path: Path) -> None:
    """Another connection holds the write lock: each request waits ~busy_timeout, its record is
    withdrawn (its 503's record kept instead), and all of it commits, in order, on the chain."""
    db = tmp_path / "locked.sqlite"
    store = Store(str(db), busy_timeout=0.3)
    await store.start()
    await store.insert_audit(record(1))
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    start = time.monotonic()
    results = await asyncio.gather(
        *(store.insert_audit(record(i)) for i in range(2, 5)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results) and time.monotonic() - start < 5
    while store.failure is None:  # the writer's own attempt ends with its busy timeout too
        await asyncio.sleep(0.01)
    assert store.health() == {"store": "cannot commit: database is locked", "backlog": 1, "records_lost": 0}
    assert not await store.ready()
    for i in range(2, 5):  # the 503s' own records, and an alert of one of them
        assert await store.keep_audit(record(i) | {"status": 503})
    await store.insert_alert({"event": "break-glass", "request_id": "req-3"}, wait=False)
    with pytest.raises(StoreUnavailable):  # an alert not committed in time is kept, not dropped
        await store.insert_alert({"event": "seal-access", "request_id": "req-4"})
    assert len(store.backlog) == 6
    lock.execute("ROLLBACK")
    while store.backlog.items:
        await asyncio.sleep(0.01)
    assert store.health() == {"store": "ok", "backlog": 0, "records_lost": 0} and await store.ready()
    rows = [(r["request_id"], r["status"]) for r in reversed(await store.audit_records(limit=10))]
    assert rows == [("req-1", 200), ("req-2", 503), ("req-3", 503), ("req-4", 503)]  # none twice
    events = [a["event"] for a in reversed(await store.list_alerts())]
    assert events == [STORE_UNAVAILABLE, "break-glass", "seal-access"]  # one per outage
    await store.insert_audit(record(5))  # and the store serves as before
    await store.close()
    lock.close()
    assert verify(db).ok


async def test_a_full_store_keeps_its_records_until_it_has_room(tmp_path: Path) -> None:
    """SQLite's own "database or disk is full" (its page limit reached, as a full disk answers)."""
    store = Store(str(tmp_path / "full.sqlite"), busy_timeout=0.3)
    await store.start()
    await store.insert_audit(record(1))
    pages = (await store.read("PRAGMA page_count"))[0][0]
    await store.read(f"PRAGMA max_page_count = {pages}")
    big = [record(i) | {"query": "x" * 8000} for i in range(2, 5)]
    results = await asyncio.gather(*(store.insert_audit(r) for r in big), return_exceptions=True)
    assert [str(r) for r in results] == ["database or disk is full"] * 3
    for r in big:
        await store.keep_audit(r | {"status": 503})
    assert store.health()["store"] == "cannot commit: database or disk is full"
    await store.read("PRAGMA max_page_count = 1073741823")  # space again
    while store.backlog.items:
        await asyncio.sleep(0.01)
    assert [r["status"] for r in await store.audit_records(limit=10)] == [503, 503, 503, 200]
    assert store.records_lost == 0
    await store.close()
    assert verify(tmp_path / "full.sqlite").ok


async def test_the_spill_file_is_replayed_at_start_once(tmp_path: Path) -> None:
    """A crash during an outage: the kept records and alerts were spilled (whole lines, fsynced) and
    are committed at the next start — once, however often it starts; nothing torn is replayed."""
    db, spill = tmp_path / "s.sqlite", tmp_path / "spill" / "audit-spill.jsonl"
    crashed = Store(str(db), busy_timeout=0.2, spill_file=str(spill))
    await crashed.start()
    await crashed.insert_audit(record(1))
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable):
        await crashed.insert_audit(record(2))
    await crashed.keep_audit(record(2) | {"status": 503})
    await crashed.insert_alert(
        {"event": "break-glass", "request_id": "req-2", "detail": {"n": 1}}, wait=False
    )
    while not spill.exists() or spill.read_bytes().count(b"\n") < 3:  # the outage's alert is the third
        await crashed._spill_now()
        await asyncio.sleep(0.01)
    await stop_task(crashed._writer)  # the process dies here: nothing more is written
    lines = spill.read_bytes().splitlines()
    assert sorted(orjson.loads(x)["kind"] for x in lines) == ["alert", "alert", "audit"]
    lock.execute("ROLLBACK")
    lock.close()
    with spill.open("ab") as fh:
        fh.write(lines[0] + b"\n" + lines[0][:30])  # the same line again, then one cut short by the crash
    for _ in range(2):
        again = Store(str(db), spill_file=str(spill))
        await again.start()
        assert [(r["request_id"], r["status"]) for r in await again.audit_records()] == [
            ("req-2", 503),
            ("req-1", 200),
        ]
        assert sorted(a["event"] for a in await again.list_alerts()) == sorted(
            ["break-glass", STORE_UNAVAILABLE]
        )
        await again.close()
        assert again.records_lost == 0 and spill.read_bytes() == b""
        spill.write_bytes(b"\n".join(lines) + b"\n")  # (the second start replays it all again: no-op)
    crashed._db.close()  # type: ignore[union-attr]
    assert verify(db).ok


def test_a_sealed_record_cannot_be_withdrawn_and_a_withdrawn_one_is_not_committed() -> None:
    backlog = Backlog(10)
    a, b = Item("audit", {}), Item("audit", {})
    backlog.append(a)
    backlog.append(b)
    assert backlog.seal([a]) and not backlog.withdraw(a)  # its COMMIT is under way
    backlog.unseal([a])  # the COMMIT failed: it waits again, and may be withdrawn
    assert backlog.withdraw(a) and list(backlog.items) == [b]
    assert not backlog.seal([a, b])  # a batch that lost an item is rolled back, formed again
    assert backlog.admit() and len(backlog) + backlog.admitted == 2
