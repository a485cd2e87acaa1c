"""Retention and archives of the audit trail (II.2: every operation traceable; 网络安全法 第二十一条:
network logs kept at least six months, which the notice cites).

No record younger than ``audit_retention_days`` (at least :data:`MIN_RETENTION_DAYS`, 180) leaves
the live store, by this module or any command. Older records may be *moved* — never dropped — into
sealed segments in ``audit_archive_dir`` so that the live SQLite store stays small and fast:

- a segment is a gzip'd JSON-lines file of the records exactly as stored (record JSON, prev_hash,
  hash, seq, patient index rows), in chain order;
- its manifest names the records (first/last seq, count, time range), the chain's ends (first
  prev_hash, last hash), the segment file's SHA-256, and the previous segment's manifest hash, and
  is signed with the audit signing key (Ed25519, the checkpoints' key);
- segments follow each other (no gap, no overlap), and the live store's first record follows the
  last segment: one chain from record 1 through every segment into the live store.

The move is crash-safe: segment and manifest are written to temporary files, fsynced and renamed
(the manifest last: a manifest on disk means its segment is whole), read back and verified, and only
then are the rows deleted from the live store — by seq range, in short chunks (one transaction per
chunk, audit and audit_patient together, oldest first), so the gateway's writer never waits long.
A crash between the steps leaves records both archived and live (verify says so; never lost, never
listed twice by search); the next ``emrguard audit archive`` finishes the move first.

The format, its checks and its search are gateway/audit/segments.py (documented in docs/AUDIT.md):
``emrguard audit verify`` checks archives and live store as one chain, ``emrguard audit search``
reads both.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.chain import (
    GENESIS,
    INDEXED_COLUMNS,
    Anchors,
    VerifyResult,
    check_record,
    indexed,
    key_id,
    read_checkpoints,
)
from gateway.audit.search import audit_time
from gateway.audit.segments import (
    MANIFEST_SUFFIX,
    SEGMENT_SUFFIX,
    TMP_SUFFIX,
    Segment,
    check_segment,
    manifest_paths,
    read_segments,
    signature_ok,
    write_segment,
)
from gateway.config import MIN_RETENTION_DAYS

#: Records per segment (about 1 KiB each before compression).
SEGMENT_RECORDS = 100_000
#: Records deleted from the live store per transaction: the gateway's writer waits at most this long.
DELETE_CHUNK = 2_000
LAW = "network logs are kept at least six months (网络安全法 第二十一条, cited by the notice)"


class RetentionError(ValueError):
    """A move that would take records younger than the retention window out of the live store."""


class ArchiveError(RuntimeError):
    """The move cannot be made safely; nothing that is not archived was removed."""


def cutoff(retention_days: int, before: str | None = None, now: datetime | None = None) -> str:
    """The time before which records may leave the live store: ``before`` if given, else the start
    of the retention window. Refused (RetentionError) if that would take a younger record."""
    if retention_days < MIN_RETENTION_DAYS:
        raise RetentionError(
            f"audit_retention_days is {retention_days}, but at least {MIN_RETENTION_DAYS} days are required: {LAW}"
        )
    limit = audit_time(((now or datetime.now(UTC)) - timedelta(days=retention_days)).isoformat(), "now")
    if before is None:
        return limit
    wanted = audit_time(before, "before")
    if wanted > limit:
        raise RetentionError(
            f"refused: --before {before} would move records younger than {retention_days} days "
            f"(audit_retention_days) out of the live store; {LAW}. Records before {limit} may be archived"
        )
    return wanted


@dataclass
class ArchiveReport:
    cutoff: str
    archive_dir: str
    segments: list[str] = field(default_factory=list)
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    #: records of an interrupted earlier run whose deletion was finished now
    resumed: int = 0
    #: why the move stopped where it did
    stopped: str = ""
    seconds: float = 0.0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def connect(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """The live store, for the move (autocommit; waits for the gateway's writer rather than failing)."""
    if not Path(db_path).exists():
        raise ArchiveError(f"no audit store at {db_path}")
    db = sqlite3.connect(str(db_path), isolation_level=None, timeout=30.0)
    db.execute("PRAGMA busy_timeout = 30000")
    return db


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One move at a time per archive."""
    with open(folder / ".lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveError(f"another `emrguard audit archive` is running on {folder}") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _clean(folder: Path) -> None:
    """Leftovers of an interrupted run: temporary files, and segment files no manifest seals (their
    records are still live, and are written again)."""
    sealed = {p.name[: -len(MANIFEST_SUFFIX)] for p in manifest_paths(folder)}
    for p in folder.glob("audit-*" + TMP_SUFFIX):
        p.unlink()
    for p in folder.glob("audit-*" + SEGMENT_SUFFIX):
        if p.name[: -len(SEGMENT_SUFFIX)] not in sealed:
            p.unlink()


def _checked(
    db: sqlite3.Connection, first: int, last: int, prev: str, cut: str, anchors: Anchors
) -> Iterator[tuple[int, str, str, str, list[list[str]], str]]:
    """The live rows first..last — (seq, prev_hash, hash, time, patient rows, record text) — each
    checked as verify would (chain, hash, columns, patient index, checkpoints, age); ArchiveError at
    the first that is not right: a tampered record is never sealed."""
    cols = ", ".join(INDEXED_COLUMNS)
    expected = first
    result = VerifyResult()
    lookup = db.cursor()
    for seq, prev_hash, stored, raw, *columns in db.execute(
        f"SELECT seq, prev_hash, hash, record, {cols} FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq",
        (first, last),
    ):
        if seq != expected:
            raise ArchiveError(
                f"record {expected} is missing from the live store: run `emrguard audit verify`"
            )
        blob = raw.encode() if isinstance(raw, str) else bytes(raw)
        record = check_record(result, f"record {seq}", seq, prev, prev_hash, stored, blob)
        rows: list[tuple[str, str]] = []
        when = ""
        if record is not None:
            for name, value in zip(INDEXED_COLUMNS, columns, strict=True):
                if record.get(name) != value:
                    result.fail(seq, f"record {seq}: column '{name}' differs from the hashed record (edited)")
            rows = sorted(indexed(record))
            for patient, role in rows:
                found = lookup.execute(
                    "SELECT 1 FROM audit_patient WHERE patient = ? AND seq = ? AND role = ?",
                    (patient, seq, role),
                ).fetchone()
                if found is None:
                    result.fail(seq, f"record {seq}: the patient index lacks {patient} ({role})")
            when = str(record.get("time", ""))
            if not when < cut:
                raise ArchiveError(f"record {seq} ({when}) is not older than {cut}: refusing to archive it")
        anchors.check(seq, stored, result)
        if not result.ok:
            raise ArchiveError(
                f"{result.problems[0]} — nothing was archived; run `emrguard audit verify` and investigate"
            )
        try:
            text = blob.decode()
        except UnicodeDecodeError:
            raise ArchiveError(f"record {seq}: not UTF-8 — nothing was archived") from None
        yield seq, prev_hash, stored, when, [list(r) for r in rows], text
        prev, expected = stored, seq + 1
    if expected != last + 1:
        raise ArchiveError(f"record {expected} is missing from the live store: run `emrguard audit verify`")


def seal(
    db: sqlite3.Connection,
    archive_dir: str | os.PathLike[str],
    key: Ed25519PrivateKey,
    first: int,
    last: int,
    previous: Segment | None,
    cut: str,
    anchors: Anchors | None = None,
) -> Segment:
    """Seal live records first..last (each checked, all older than ``cut``) into a segment and its
    signed manifest, on disk before this returns. The live store is not changed."""
    prev_hash = previous.last_hash if previous is not None else GENESIS
    rows = _checked(db, first, last, prev_hash, cut, anchors if anchors is not None else Anchors())
    return write_segment(archive_dir, key, first, last, previous, rows, {"cutoff": cut})


def sealed_hashes(seg: Segment, public_key: Ed25519PublicKey) -> dict[int, str]:
    """Read a segment back from disk and verify it whole (signature, file hash, chain); seq → hash.
    ArchiveError if anything is wrong: then nothing is deleted."""
    result = VerifyResult()
    kept: dict[int, str] = {}
    if not signature_ok(seg.body, public_key):
        raise ArchiveError(f"archive segment {seg.name}: not signed by this key ({key_id(public_key)})")
    check_segment(seg, public_key, result, None, seg.first_seq, kept)
    if not result.ok:
        raise ArchiveError(f"{result.problems[0]} — the live store was not changed")
    return kept


def delete_archived(
    db: sqlite3.Connection, first: int, last: int, archived: dict[int, str], chunk: int
) -> int:
    """Delete records first..last (and their patient index rows) from the live store, oldest first,
    ``chunk`` records per transaction, each only if it is the record archived (same hash)."""
    deleted = 0
    for start in range(first, last + 1, chunk):
        end = min(start + chunk - 1, last)
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                "SELECT seq, hash, record FROM audit WHERE seq BETWEEN ? AND ?", (start, end)
            ).fetchall()
            index: list[tuple[str, int]] = []
            for seq, stored, raw in rows:
                if archived.get(seq) != stored:
                    raise ArchiveError(
                        f"record {seq} in the live store is not the record archived: nothing deleted"
                    )
                index += [(patient, seq) for patient in {p for p, _ in indexed(orjson.loads(raw))}]
            db.executemany("DELETE FROM audit_patient WHERE patient = ? AND seq = ?", index)
            deleted += db.execute("DELETE FROM audit WHERE seq BETWEEN ? AND ?", (start, end)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return deleted


def plan(db: sqlite3.Connection, cut: str) -> tuple[int, int, str]:
    """(first, last, why it stops there): the oldest run of live records older than ``cut``.
    Archiving takes a prefix of the chain only; the newest record always stays (the gateway's
    chain continues from it), and so does any record a BALP destination has not received yet."""
    first, head = db.execute("SELECT MIN(seq), MAX(seq) FROM audit").fetchone()
    if first is None:
        return 0, -1, "the live store is empty"
    last, why = head - 1, f"record {head}, the newest, stays in the live store (the chain continues from it)"
    # '+time': walk by seq from the oldest (what is archived is read anyway), not the time index.
    young = db.execute("SELECT seq FROM audit WHERE +time >= ? ORDER BY seq LIMIT 1", (cut,)).fetchone()
    if young is not None and young[0] - 1 < last:
        last, why = young[0] - 1, f"record {young[0]} is not older than {cut} (retention)"
    forward = db.execute("SELECT destination, seq FROM audit_forward ORDER BY seq LIMIT 1").fetchone()
    if forward is not None and forward[1] < last:
        last, why = forward[1], f"records after {forward[1]} are not yet forwarded to {forward[0]}"
    return first, last, why


def archive(
    db_path: str | os.PathLike[str],
    archive_dir: str | os.PathLike[str],
    key: Ed25519PrivateKey,
    *,
    retention_days: int,
    before: str | None = None,
    now: datetime | None = None,
    checkpoint_file: str | os.PathLike[str] | None = None,
    segment_records: int = SEGMENT_RECORDS,
    chunk: int = DELETE_CHUNK,
    dry_run: bool = False,
) -> ArchiveReport:
    """Move every live record older than the retention window (or ``before``, if earlier) into
    signed segments, then out of the live store (II.2; 网络安全法 第二十一条). Finishes an
    interrupted earlier move first. RetentionError if ``before`` is inside the window."""
    started = time.monotonic()
    cut = cutoff(retention_days, before, now)
    folder = Path(archive_dir)
    report = ArchiveReport(cut, str(folder), dry_run=dry_run)
    folder.mkdir(parents=True, exist_ok=True)
    public = key.public_key()
    db = connect(db_path)
    try:
        with _locked(folder):
            if not dry_run:
                _clean(folder)
            readable, unreadable = read_segments(folder)
            if unreadable:
                raise ArchiveError(
                    f"archive manifest {unreadable[0][0].name} is unreadable ({unreadable[0][1]}): "
                    "run `emrguard audit verify`"
                )
            previous = readable[-1] if readable else None
            if previous is not None and not signature_ok(previous.body, public):
                raise ArchiveError(
                    f"archive segment {previous.name} is not signed by this key ({key_id(public)}): "
                    "an archive is extended only with the key that signed it"
                )
            live_first = db.execute("SELECT MIN(seq) FROM audit").fetchone()[0]
            if previous is not None and live_first is not None and live_first <= previous.last_seq:
                # A crash after the segment was sealed, before all its rows were deleted: finish.
                kept = sealed_hashes(previous, public)
                if dry_run:
                    report.resumed = previous.last_seq - live_first + 1
                else:
                    report.resumed = delete_archived(db, live_first, previous.last_seq, kept, chunk)
            first, last, report.stopped = plan(db, cut)
            after = previous.last_seq if previous is not None else 0
            if dry_run:
                first = max(first, after + 1)
            if first <= last and first != after + 1:
                raise ArchiveError(
                    f"the live store starts at record {first} but the archive ends at record {after}: "
                    "records are missing; run `emrguard audit verify`"
                )
            if first > last:
                report.seconds = round(time.monotonic() - started, 3)
                return report
            report.first_seq, report.last_seq = first, last
            if dry_run:
                report.records = last - first + 1
                report.seconds = round(time.monotonic() - started, 3)
                return report
            anchors = read_checkpoints(checkpoint_file, public, None, range(first, last + 1))
            for start in range(first, last + 1, segment_records):
                end = min(start + segment_records - 1, last)
                seg = seal(db, folder, key, start, end, previous, cut, anchors)
                kept = sealed_hashes(seg, public)  # read back from disk before anything is deleted
                delete_archived(db, start, end, kept, chunk)
                report.segments.append(seg.name)
                report.records += seg.body["records"]
                previous = seg
            assert previous is not None  # (at least one segment was written)
            row = db.execute("SELECT prev_hash FROM audit WHERE seq = ?", (last + 1,)).fetchone()
            if row is None or row[0] != previous.last_hash:
                raise ArchiveError(
                    f"the live store's record {last + 1} does not follow the archive's last record"
                )
            # The deletions grew the WAL: copy it into the database now (freed pages are reused by new records).
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        db.close()
    report.seconds = round(time.monotonic() - started, 3)
    return report
