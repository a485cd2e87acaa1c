"""Tamper evidence of the audit trail (II.2): `emrguard audit verify` must catch an edited field,
a deleted record, two swapped records and a truncated tail, and pass an untouched store.
Real SQLite file, real Ed25519 key, the real CLI entry point."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.aio import stop_task
from gateway.audit.checkpoints import Checkpointer
from gateway.cli import main
from gateway.store import Store
from tests.builders import audit_record


def record(i: int) -> dict:
    return audit_record(
        i, operator=f"op-{i % 3}", patients_targeted=[f"Patient/p{i}"], patients_disclosed=[f"Patient/p{i}"]
    )


class _Log:
    def info(self, *a, **k) -> None: ...

    def error(self, *a, **k) -> None: ...


@pytest.fixture
async def trail(tmp_path: Path) -> dict:
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "audit-signing.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    db, checkpoints = tmp_path / "audit.sqlite", tmp_path / "checkpoints.jsonl"
    store = Store(str(db))
    await store.start()
    cp = Checkpointer(store, str(key_file), str(checkpoints), 3600, _Log())
    for i in range(1, 21):
        await store.insert_audit(record(i))
        if i in (10, 20):
            await cp.checkpoint()
    await store.close()
    return {"db": db, "checkpoints": checkpoints, "key": key_file}


def run_verify(trail: dict, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(
        [
            "audit",
            "verify",
            "--db",
            str(trail["db"]),
            "--checkpoints",
            str(trail["checkpoints"]),
            "--public-key",
            str(trail["key"]),
            "--archive-dir",
            str(Path(trail["db"]).parent / "archive"),  # none: the whole chain is live
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def test_untouched_store_verifies(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_verify(trail, capsys)
    assert code == 0 and out["ok"] and out["records"] == 20 and out["checkpoints"] == 2
    assert out["warnings"] == []


def test_edited_field_is_caught(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(trail["db"]) as db:
        blob = json.loads(db.execute("SELECT record FROM audit WHERE seq = 7").fetchone()[0])
        blob["operator"] = "someone-else"
        db.execute(
            "UPDATE audit SET record = ?, operator = ? WHERE seq = 7",
            (json.dumps(blob, sort_keys=True), "someone-else"),
        )
    code, out = run_verify(trail, capsys)
    assert code == 1 and out["first_broken_seq"] == 7


def test_edited_index_column_alone_is_caught(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(trail["db"]) as db:
        db.execute("UPDATE audit SET decision = 'deny' WHERE seq = 4")
    code, out = run_verify(trail, capsys)
    assert code == 1 and out["first_broken_seq"] == 4


def test_deleted_record_is_caught(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(trail["db"]) as db:
        db.execute("DELETE FROM audit_patient WHERE seq = 12")
        db.execute("DELETE FROM audit WHERE seq = 12")
    code, out = run_verify(trail, capsys)
    assert code == 1 and out["first_broken_seq"] == 13


def test_swapped_records_are_caught(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(trail["db"]) as db:
        a = db.execute("SELECT record, prev_hash, hash, request_id FROM audit WHERE seq = 5").fetchone()
        b = db.execute("SELECT record, prev_hash, hash, request_id FROM audit WHERE seq = 6").fetchone()
        db.execute("UPDATE audit SET request_id = 'tmp' WHERE seq = 5")
        db.execute("UPDATE audit SET record = ?, prev_hash = ?, hash = ?, request_id = ? WHERE seq = 6", a)
        db.execute("UPDATE audit SET record = ?, prev_hash = ?, hash = ?, request_id = ? WHERE seq = 5", b)
    code, out = run_verify(trail, capsys)
    assert code == 1 and out["first_broken_seq"] == 5


def test_deleted_oldest_records_are_named_missing(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """The chain's beginning is no less evidence than its end: without an archive that holds them,
    records deleted from the start are missing (the checkpoint naming one of them too)."""
    with sqlite3.connect(trail["db"]) as db:
        db.execute("DELETE FROM audit_patient WHERE seq <= 10")
        db.execute("DELETE FROM audit WHERE seq <= 10")
    code, out = run_verify(trail, capsys)
    assert code == 1 and out["first_broken_seq"] == 11
    assert out["problems"][0].startswith(
        "records 1–10 missing: not in the live store, and no archive segments"
    )


def test_truncated_tail_is_caught_by_the_signed_checkpoint(
    trail: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(trail["db"]) as db:
        db.execute("DELETE FROM audit_patient WHERE seq > 16")
        db.execute("DELETE FROM audit WHERE seq > 16")
    code, out = run_verify(trail, capsys)
    assert code == 1 and "truncated" in " ".join(out["problems"])
    assert out["first_broken_seq"] == 17
    # Without the checkpoints the shorter chain would look whole: that is why they exist.
    code = main(
        ["audit", "verify", "--db", str(trail["db"]), "--archive-dir", str(trail["db"].parent / "archive")]
    )
    assert code == 0 and "no checkpoints" in capsys.readouterr().out


def test_forged_checkpoint_is_caught(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    lines = trail["checkpoints"].read_text().splitlines()
    forged = json.loads(lines[-1])
    forged["hash"] = "f" * 64
    trail["checkpoints"].write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    code, out = run_verify(trail, capsys)
    assert code == 1 and "signature invalid" in " ".join(out["problems"])


def test_a_deleted_patient_index_row_is_caught(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """Deleting audit_patient rows hides accesses from "who saw Patient/x": the index is verified too."""
    with sqlite3.connect(trail["db"]) as db:
        db.execute("DELETE FROM audit_patient WHERE seq = 9 AND role = 'disclosed'")
    code, out = run_verify(trail, capsys)
    assert code == 1 and out["first_broken_seq"] == 9 and "patient index" in out["problems"][0]


def test_an_added_patient_index_row_is_caught(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(trail["db"]) as db:
        db.execute(
            "INSERT INTO audit_patient (seq, patient, role) VALUES (3, 'Patient/innocent', 'disclosed')"
        )
        db.execute("INSERT INTO audit_patient (seq, patient, role) VALUES (999, 'Patient/p1', 'targeted')")
    code, out = run_verify(trail, capsys)
    assert code == 1 and out["first_broken_seq"] == 3
    assert any("999" in p for p in out["problems"])


def forge(db_path: Path, i: int) -> None:
    """Append a record with a correctly recomputed chain hash, as an attacker with the file would."""
    from gateway.audit.chain import canonical, chain_hash

    rec = record(i)
    with sqlite3.connect(db_path) as db:
        prev = db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()[0]
        blob = canonical(rec)
        cur = db.execute(
            "INSERT INTO audit (request_id, time, operator, purpose, interaction, resource_type, decision, status,"
            " record, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rec["request_id"],
                rec["time"],
                rec["operator"],
                rec["purpose"],
                rec["interaction"],
                rec["resource_type"],
                rec["decision"],
                rec["status"],
                blob,
                prev,
                chain_hash(prev, blob),
            ),
        )
        for p in rec["patients_targeted"]:
            db.execute("INSERT INTO audit_patient VALUES (?, ?, 'targeted')", (cur.lastrowid, p))
        for p in rec["patients_disclosed"]:
            db.execute("INSERT INTO audit_patient VALUES (?, ?, 'disclosed')", (cur.lastrowid, p))


def test_a_record_forged_after_the_last_checkpoint_is_reported(
    trail: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    forge(trail["db"], 21)
    code, out = run_verify(trail, capsys)
    assert code == 0 and out["warnings"] == [
        "1 record(s) after the last signed checkpoint (record 20): not yet anchored, so their deletion or "
        "rewriting would not be detected"
    ]


async def test_a_record_after_a_clean_shutdown_checkpoint_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    db, checkpoints = tmp_path / "a.sqlite", tmp_path / "cp.jsonl"
    store = Store(str(db))
    await store.start()
    cp = Checkpointer(store, str(key_file), str(checkpoints), 3600, _Log())
    for i in range(1, 6):
        await store.insert_audit(record(i))
    await cp.close()  # the clean shutdown signs a final checkpoint
    await store.close()
    trail = {"db": db, "checkpoints": checkpoints, "key": key_file}
    code, out = run_verify(trail, capsys)
    assert code == 0 and out["warnings"] == []
    forge(db, 6)
    code, out = run_verify(trail, capsys)
    assert code == 1 and out["first_broken_seq"] == 6 and "clean shutdown" in out["problems"][0]


async def test_a_restart_after_a_clean_shutdown_reopens_the_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway restarted after a clean shutdown, killed before its first interval is over: its
    records are an unanchored tail (a warning), not records "after a final checkpoint" (a failure) —
    the restart signs at once that the gateway runs again."""
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    db, checkpoints = tmp_path / "a.sqlite", tmp_path / "cp.jsonl"
    store = Store(str(db))
    await store.start()
    cp = Checkpointer(store, str(key_file), str(checkpoints), 3600, _Log())
    cp.start()
    for i in range(1, 4):
        await store.insert_audit(record(i))
    await cp.close()
    await store.close()
    store = Store(str(db))  # the restart
    await store.start()
    cp = Checkpointer(store, str(key_file), str(checkpoints), 3600, _Log())
    cp.start()
    await asyncio.sleep(0.2)  # the start checkpoint; the next would be an hour away
    await store.insert_audit(record(4))
    await stop_task(cp._task)  # killed: no final checkpoint
    await store.close()
    code, out = run_verify({"db": db, "checkpoints": checkpoints, "key": key_file}, capsys)
    assert code == 0, out
    assert out["warnings"] and "1 record(s) after the last signed checkpoint" in out["warnings"][0]


async def test_a_test_gateway_signs_its_trail_as_serve_does(
    aiohttp_client: Any, make_settings: Any, idp: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every test app runs with the session's signing key (tests/conftest.py): its trail is anchored,
    and its clean shutdown signs the final checkpoint."""
    from gateway.app import create_app
    from tests.conftest import UNREACHABLE, auth

    settings = make_settings(UNREACHABLE)
    client = await aiohttp_client(create_app(settings))
    for _ in range(3):
        resp = await client.get("/admin/audit", headers=auth(idp.token("security_officer"), None))
        assert resp.status == 200
    await client.close()
    trail = {
        "db": Path(settings.db),
        "checkpoints": settings.audit_checkpoint_file,
        "key": settings.audit_signing_key_file,
    }
    code, out = run_verify(trail, capsys)
    assert code == 0 and out["records"] == 3 and out["checkpoints"] >= 1 and out["warnings"] == []
    assert json.loads(Path(settings.audit_checkpoint_file).read_text().splitlines()[-1])["final"] is True
