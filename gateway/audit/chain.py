"""Tamper evidence for the audit trail (II.2: traceable and tamper-resistant).

Every audit record carries the hash of the one before it: ``hash = SHA-256(prev_hash "\\n" record)``
over the record's canonical JSON (sorted keys, exactly the bytes stored). Editing a field, deleting
a record or swapping two breaks the chain at that record. Deleting the *newest* records leaves a
shorter chain that still verifies, so the chain head is periodically signed (Ed25519) into
checkpoints kept outside the database (a JSON-lines file and the log stream): a checkpoint naming a
record the database no longer holds, or holds with another hash, is a truncation or a rewrite.

Records older than the retention window (网络安全法 第二十一条: six months at least) may be moved
into signed, chain-linked archive segments (gateway/audit/archive.py, docs/AUDIT.md); the chain then
runs from the first archived record through every segment into the live store, and :func:`verify`
follows it across both.

``emrguard audit verify`` runs :func:`verify` and names the first broken record.
"""

from __future__ import annotations

import base64
import hashlib
import os
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


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key (SHA-256 of its raw bytes, 16 hex digits): which key signed."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


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
    #: archive segments checked, and the records they hold (counted in ``records`` too)
    segments: int = 0
    archived: int = 0
    first_broken_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str) -> None:
        self.ok = False
        if self.first_broken_seq is None and seq is not None:
            self.first_broken_seq = seq
        self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "first_broken_seq": self.first_broken_seq,
            "problems": self.problems[:20],
            "warnings": self.warnings,
        }
        if self.segments:
            out["archive"] = {"segments": self.segments, "records": self.archived}
        return out


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


def indexed(record: dict[str, Any]) -> set[tuple[str, str]]:
    """What the patient index must hold for a record: every patient targeted and disclosed."""
    return {(p, "targeted") for p in record.get("patients_targeted") or []} | {
        (p, "disclosed") for p in record.get("patients_disclosed") or []
    }


_indexed = indexed  # (the old name)


@dataclass
class Anchors:
    """The signed checkpoints, by the record each names; matched as the chain is walked, so
    verifying holds one entry per checkpoint in memory, not one per record."""

    by_seq: dict[int, list[tuple[int, str, str, bool]]] = field(default_factory=dict)
    #: the newest record a valid checkpoint signed, and whether that was a clean shutdown's
    anchored: int = 0
    last_final: bool = False
    present: bool = False

    def check(self, seq: int, stored: str, result: VerifyResult) -> None:
        for n, head, time, final in self.by_seq.pop(seq, ()):
            if head != stored:
                result.fail(
                    seq,
                    f"checkpoint line {n}: record {seq} does not have the hash signed at {time} (rewritten)",
                )
            elif seq >= self.anchored:
                self.anchored, self.last_final = seq, final


def read_checkpoints(
    checkpoint_file: str | os.PathLike[str] | None,
    public_key: Ed25519PublicKey | None,
    result: VerifyResult | None = None,
    seqs: range | None = None,
) -> Anchors:
    """Every checkpoint of the file whose signature holds (only those naming a record in ``seqs``,
    if given); an unreadable line or a bad signature is a failure in ``result``."""
    result = result if result is not None else VerifyResult()
    anchors = Anchors()
    if checkpoint_file is None or not Path(checkpoint_file).exists():
        return anchors
    anchors.present = True
    with open(checkpoint_file, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            result.checkpoints += 1
            try:
                cp = orjson.loads(line)
                seq, head, time = int(cp["seq"]), str(cp["hash"]), str(cp["time"])
            except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
                result.fail(None, f"checkpoint line {n}: unreadable")
                continue
            if seqs is not None and seq not in seqs:
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
            anchors.by_seq.setdefault(seq, []).append((n, head, time, final))
    return anchors


def check_record(
    result: VerifyResult,
    where: str,
    seq: int,
    expected_prev: str,
    prev_hash: str,
    stored: str,
    blob: bytes,
) -> dict[str, Any] | None:
    """One link of the chain: it follows ``expected_prev`` and its content has its hash. The record
    (parsed) for the caller's further checks, None if it is not JSON."""
    if prev_hash != expected_prev:
        result.fail(
            seq,
            f"{where}: does not follow the record before it (a record was deleted, inserted or moved)",
        )
    if chain_hash(prev_hash or "", blob) != stored:
        result.fail(seq, f"{where}: its content does not match its hash (edited)")
    try:
        record = orjson.loads(blob)
    except orjson.JSONDecodeError:
        result.fail(seq, f"{where}: not valid JSON")
        return None
    return record if isinstance(record, dict) else {}


def verify(
    db_path: str | Path,
    checkpoint_file: str | Path | None = None,
    public_key: Ed25519PublicKey | None = None,
    archive_dir: str | Path | None = None,
) -> VerifyResult:
    """Check the whole chain — the archive segments in ``archive_dir`` (their signatures, files,
    internal chains and links, gateway/audit/segments.py), then the live store, which must continue
    the last segment — and every checkpoint against it (II.2)."""
    result = VerifyResult()
    anchors = read_checkpoints(checkpoint_file, public_key, result)
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        live_first = db.execute("SELECT MIN(seq) FROM audit").fetchone()[0]
        prev, last_seq, overlap = GENESIS, 0, {}
        archive_end = 0
        from gateway.audit import segments

        if archive_dir is not None and segments.manifest_paths(archive_dir):
            if public_key is None:
                result.warnings.append("no public key: archive segment signatures not checked")
            tail = segments.verify_archive(archive_dir, public_key, result, anchors, keep_from=live_first)
            prev, last_seq, overlap, archive_end = tail.last_hash, tail.last_seq, tail.kept, tail.last_seq
        if live_first is not None and live_first > last_seq + 1:
            missing = (
                f"records {last_seq + 1}–{live_first - 1}"
                if live_first > last_seq + 2
                else f"record {last_seq + 1}"
            )
            where = (
                f"neither in the archive ({archive_dir}, which ends at record {archive_end}: "
                "was its last segment removed?) nor in the live store"
                if archive_end
                else "not in the live store, and no archive segments"
                + (f" in {archive_dir}" if archive_dir is not None else " given (--archive-dir)")
            )
            result.fail(live_first, f"{missing} missing: {where}")
            prev = ""  # (the first live record is reported once, as the one after the gap)
        elif live_first is not None and live_first <= last_seq:
            # An interrupted `audit archive`: the segment is written, its rows not all deleted yet.
            prev = overlap.get(live_first - 1, GENESIS if live_first == 1 else "")
            result.warnings.append(
                f"records {live_first}–{last_seq} are both in the archive and in the live store "
                "(an interrupted `emrguard audit archive`; running it again finishes the move)"
            )
        _verify_live(db, result, anchors, prev, overlap)
        last_seq = max(last_seq, db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0])
    finally:
        db.close()
    if checkpoint_file is not None and last_seq > 0 and not anchors.by_seq and anchors.anchored == 0:
        # Named, but gone or emptied: the evidence against a deleted tail was itself removed (fault
        # review) — a failure, not the "not configured" of a trail run deliberately without them.
        what = "does not exist" if not anchors.present else "holds no checkpoint"
        result.fail(
            None,
            f"the checkpoint file {checkpoint_file} {what}, but the trail has {last_seq} record(s): "
            "it was deleted or emptied (the log stream's audit_checkpoint lines hold copies)",
        )
        return result
    if not anchors.present:
        result.warnings.append("no checkpoints: deleting the newest records would not be detected")
        return result
    if public_key is None:
        result.warnings.append("no public key: checkpoint signatures not checked")
    first_held = 1 if archive_end else (live_first or last_seq + 1)
    unmatched_archived = 0
    for seq, entries in sorted(anchors.by_seq.items()):
        for n, _, time, _ in entries:
            if seq > last_seq:
                result.fail(
                    last_seq + 1,
                    f"checkpoint line {n}: record {seq} was signed at {time} but the store ends at record {last_seq} (truncated)",
                )
            elif seq < first_held:
                unmatched_archived += 1
            else:
                result.fail(
                    seq,
                    f"checkpoint line {n}: record {seq} was signed at {time} but is neither in the archive nor in the store "
                    "(deleted, or in a segment that cannot be read)",
                )
    if unmatched_archived:
        result.warnings.append(
            f"{unmatched_archived} checkpoint(s) sign records that are no longer in the live store (archived): "
            "give the archive directory (--archive-dir) to check them"
        )
    unanchored = last_seq - anchors.anchored
    if unanchored > 0 and anchors.last_final:
        result.fail(
            anchors.anchored + 1,
            f"{unanchored} record(s) after the checkpoint the gateway signed at its last clean shutdown, "
            f"and none signed since: appended by something other than the gateway",
        )
    elif unanchored > 0:
        result.warnings.append(
            f"{unanchored} record(s) after the last signed checkpoint (record {anchors.anchored}): "
            "not yet anchored, so their deletion or rewriting would not be detected"
        )
    return result


def _verify_live(
    db: sqlite3.Connection, result: VerifyResult, anchors: Anchors, prev: str, archived: dict[int, str]
) -> None:
    """The live store's records (and its patient index) in order, continuing from ``prev``; a record
    also held by the archive (``archived``: seq → hash) must be the same record."""
    # The patient index is what "who saw Patient/x" searches: it must say what the chain says.
    index = _index_rows(db)
    index_seq, index_set = next(index, (None, set()))
    for seq, prev_hash, stored, raw, *columns in _rows(db):
        blob = raw.encode() if isinstance(raw, str) else bytes(raw or b"")
        where = f"record {seq}"
        if seq in archived:
            if archived[seq] != stored:
                result.fail(seq, f"{where}: differs between the archive and the live store (rewritten)")
        else:
            result.records += 1
        record = check_record(result, where, seq, prev if prev else prev_hash, prev_hash, stored, blob)
        if record is None:
            record = {}
        else:
            for name, value in zip(INDEXED_COLUMNS, columns, strict=True):
                if record.get(name) != value:
                    result.fail(seq, f"{where}: column '{name}' differs from the hashed record (edited)")
        while index_seq is not None and index_seq < seq:  # index rows of no record: inserted
            result.fail(index_seq, f"patient index: rows for record {index_seq}, which does not exist")
            index_seq, index_set = next(index, (None, set()))
        held = index_set if index_seq == seq else set()
        if index_seq == seq:
            index_seq, index_set = next(index, (None, set()))
        if held != indexed(record):
            result.fail(
                seq,
                f"{where}: the patient index does not match the record "
                f"({len(indexed(record) - held)} missing, {len(held - indexed(record))} added): "
                "audit search by patient would not find what the trail holds",
            )
        if seq not in archived:
            anchors.check(seq, stored, result)
        prev = stored
    while index_seq is not None:
        result.fail(index_seq, f"patient index: rows for record {index_seq}, which does not exist")
        index_seq, index_set = next(index, (None, set()))
