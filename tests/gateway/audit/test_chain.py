"""Tamper evidence of the audit trail (II.2): `emrguard audit verify` must catch an edited field,
a deleted record, two swapped records and a truncated tail, and pass an untouched store.
Real SQLite file, real Ed25519 key, the real CLI entry point."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    code = main(["audit", "verify", "--db", str(trail["db"])])
    assert code == 0 and "no checkpoints" in capsys.readouterr().out


def test_forged_checkpoint_is_caught(trail: dict, capsys: pytest.CaptureFixture[str]) -> None:
    lines = trail["checkpoints"].read_text().splitlines()
    forged = json.loads(lines[-1])
    forged["hash"] = "f" * 64
    trail["checkpoints"].write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    code, out = run_verify(trail, capsys)
    assert code == 1 and "signature invalid" in " ".join(out["problems"])
