"""Tamper evidence for the audit trail (II.2: traceable and tamper-resistant).

Every audit record carries the hash of the one before it: ``hash = SHA-256(prev_hash "\\n" record)``
over the record's canonical JSON (sorted keys, exactly the bytes stored). Editing a field, deleting
a record or swapping two breaks the chain at that record. Deleting the *newest* records leaves a
shorter chain that still verifies, so the chain head is periodically signed (Ed25519) into
checkpoints kept outside the database (a JSON-lines file and the log stream): a checkpoint naming a
record the database no longer holds, or holds with another hash, is a truncation or a rewrite.

``emrguard audit verify`` runs :func:`verify` and names the first broken record.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
FINAL_MARK = "\nfinal"
# Columns kept beside the record for indexing: they must agree with the hashed record.
INDEXED_COLUMNS = (
    "request_id",
    "time",
    "operator",
    "purpose",
    "interaction",
    "resource_type",
    "decision",
    "status",
)


def canonical(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, blob: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + blob).hexdigest()


def checkpoint_message(seq: int, head: str, time: str, final: bool = False) -> bytes:
    """What a checkpoint signs. A final one (written at a clean shutdown) says so in what is signed:
    nothing may follow it until the gateway signs again."""
    return f"emrguard-audit-checkpoint\n{seq}\n{head}\n{time}{FINAL_MARK if final else ''}".encode()


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    data = Path(path).read_bytes()
    key: Any
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


def sign_checkpoint(
    key: Ed25519PrivateKey, seq: int, head: str, time: str, final: bool = False
) -> dict[str, Any]:
    signature = key.sign(checkpoint_message(seq, head, time, final))
    cp: dict[str, Any] = {
        "seq": seq,
        "hash": head,
        "time": time,
        "signature": base64.b64encode(signature).decode(),
    }
    if final:
        cp["final"] = True
    return cp


@dataclass
class VerifyResult:
    ok: bool = True
    records: int = 0
    checkpoints: int = 0
    first_broken_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str) -> None:
        self.ok = False
        if self.first_broken_seq is None and seq is not None:
            self.first_broken_seq = seq
        self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "first_broken_seq": self.first_broken_seq,
            "problems": self.problems[:20],
            "warnings": self.warnings,
        }


def _rows(db: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    cols = ", ".join(INDEXED_COLUMNS)
    yield from db.execute(f"SELECT seq, prev_hash, hash, record, {cols} FROM audit ORDER BY seq")


def _index_rows(db: sqlite3.Connection) -> Iterator[tuple[int, set[tuple[str, str]]]]:
    """The patient index (audit_patient), grouped by record, in record order."""
    seq, rows = None, set()
    for s, patient, role in db.execute("SELECT seq, patient, role FROM audit_patient ORDER BY seq"):
        if s != seq and seq is not None:
            yield seq, rows
            rows = set()
        seq = s
        rows.add((patient, role))
    if seq is not None:
        yield seq, rows


def _indexed(record: dict[str, Any]) -> set[tuple[str, str]]:
    """What the patient index must hold for a record: every patient targeted and disclosed."""
    return {(p, "targeted") for p in record.get("patients_targeted") or []} | {
        (p, "disclosed") for p in record.get("patients_disclosed") or []
    }


def verify(
    db_path: str | Path, checkpoint_file: str | Path | None = None, public_key: Ed25519PublicKey | None = None
) -> VerifyResult:
    """Check the whole chain, then every checkpoint against it."""
    result = VerifyResult()
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        prev = GENESIS
        hashes: dict[int, str] = {}
        last_seq = 0
        # The patient index is what "who saw Patient/x" searches: it must say what the chain says.
        index = _index_rows(db)
        index_seq, index_set = next(index, (None, set()))
        for seq, prev_hash, stored, raw, *columns in _rows(db):
            result.records += 1
            blob = raw.encode() if isinstance(raw, str) else bytes(raw or b"")
            last_seq = seq
            if prev_hash != prev:
                result.fail(
                    seq,
                    f"record {seq}: does not follow the record before it (a record was deleted, inserted or moved)",
                )
            if chain_hash(prev_hash or "", blob) != stored:
                result.fail(seq, f"record {seq}: its content does not match its hash (edited)")
            try:
                record = orjson.loads(blob)
                for name, value in zip(INDEXED_COLUMNS, columns, strict=True):
                    if record.get(name) != value:
                        result.fail(
                            seq, f"record {seq}: column '{name}' differs from the hashed record (edited)"
                        )
            except orjson.JSONDecodeError:
                result.fail(seq, f"record {seq}: not valid JSON")
                record = {}
            while index_seq is not None and index_seq < seq:  # index rows of no record: inserted
                result.fail(index_seq, f"patient index: rows for record {index_seq}, which does not exist")
                index_seq, index_set = next(index, (None, set()))
            held = index_set if index_seq == seq else set()
            if index_seq == seq:
                index_seq, index_set = next(index, (None, set()))
            if held != _indexed(record):
                result.fail(
                    seq,
                    f"record {seq}: the patient index does not match the record "
                    f"({len(_indexed(record) - held)} missing, {len(held - _indexed(record))} added): "
                    "audit search by patient would not find what the trail holds",
                )
            hashes[seq] = stored
            prev = stored
        while index_seq is not None:
            result.fail(index_seq, f"patient index: rows for record {index_seq}, which does not exist")
            index_seq, index_set = next(index, (None, set()))
    finally:
        db.close()
    if checkpoint_file is None or not Path(checkpoint_file).exists():
        result.warnings.append("no checkpoints: deleting the newest records would not be detected")
        return result
    if public_key is None:
        result.warnings.append("no public key: checkpoint signatures not checked")
    anchored, last_final = 0, False  # the newest record a valid checkpoint signed; was it a shutdown's
    for n, line in enumerate(Path(checkpoint_file).read_text().splitlines(), 1):
        if not line.strip():
            continue
        result.checkpoints += 1
        try:
            cp = orjson.loads(line)
            seq, head, time = int(cp["seq"]), str(cp["hash"]), str(cp["time"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            result.fail(None, f"checkpoint line {n}: unreadable")
            continue
        final = cp.get("final") is True
        if public_key is not None:
            try:
                public_key.verify(
                    base64.b64decode(cp.get("signature", "")), checkpoint_message(seq, head, time, final)
                )
            except (InvalidSignature, ValueError):
                result.fail(
                    None, f"checkpoint line {n} (record {seq}): signature invalid (forged checkpoint)"
                )
                continue
        if seq > last_seq:
            result.fail(
                last_seq + 1,
                f"checkpoint line {n}: record {seq} was signed at {time} but the store ends at record {last_seq} (truncated)",
            )
        elif hashes.get(seq) != head:
            result.fail(
                seq, f"checkpoint line {n}: record {seq} does not have the hash signed at {time} (rewritten)"
            )
        elif seq >= anchored:
            anchored, last_final = seq, final
    unanchored = last_seq - anchored
    if unanchored > 0 and last_final:
        result.fail(
            anchored + 1,
            f"{unanchored} record(s) after the checkpoint the gateway signed at its last clean shutdown, "
            f"and none signed since: appended by something other than the gateway",
        )
    elif unanchored > 0:
        result.warnings.append(
            f"{unanchored} record(s) after the last signed checkpoint (record {anchored}): "
            "not yet anchored, so their deletion or rewriting would not be detected"
        )
    return result
