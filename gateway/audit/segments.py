"""The audit archive's format (docs/AUDIT.md) and its read side: the segments and signed manifests
that ``emrguard audit archive`` writes (gateway/audit/archive.py) once records are older than the
retention window (网络安全法 第二十一条: network logs kept at least six months), checked by
:func:`verify_archive` for ``emrguard audit verify`` (II.2 tamper evidence: signatures, file
hashes, internal chains, the links between segments) and read by :func:`search_archive` for
``emrguard audit search`` (II.2 可查询).

A segment ``audit-<first seq>-<last seq>.jsonl.gz`` holds the records exactly as the live store held
them, one JSON line each — ``seq``, ``prev_hash``, ``hash``, ``record`` (the hashed canonical JSON,
as text) and ``patients`` (its patient index rows) — in chain order. Its manifest
``audit-<first>-<last>.manifest.json`` (canonical JSON) names the records, the chain's ends, the
segment file's SHA-256 and the previous manifest's SHA-256, and carries an Ed25519 signature by the
audit signing key over :data:`SIGNED_PREFIX` and itself without ``signature``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.chain import GENESIS, Anchors, VerifyResult, canonical, check_record, indexed, key_id

FORMAT = "emrguard-audit-archive/1"
#: What a manifest's signature covers is this prefix and the manifest's canonical JSON without
#: ``signature`` (so a signature can never be taken for a checkpoint's, or the other way round).
SIGNED_PREFIX = b"emrguard-audit-segment\n"
SEGMENT_SUFFIX = ".jsonl.gz"
MANIFEST_SUFFIX = ".manifest.json"
TMP_SUFFIX = ".tmp"


def segment_stem(first_seq: int, last_seq: int) -> str:
    return f"audit-{first_seq:012d}-{last_seq:012d}"


def manifest_paths(archive_dir: str | os.PathLike[str]) -> list[Path]:
    """The manifests in ``archive_dir``, in chain order (their names sort as their records do)."""
    folder = Path(archive_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("audit-*" + MANIFEST_SUFFIX) if p.is_file())


def signed_message(body: dict[str, Any]) -> bytes:
    return SIGNED_PREFIX + canonical({k: v for k, v in body.items() if k != "signature"})


@dataclass(frozen=True)
class Segment:
    """A manifest as read from disk; ``digest`` is the SHA-256 of its bytes (the next one names it)."""

    path: Path
    body: dict[str, Any]
    digest: str

    @property
    def name(self) -> str:
        return self.path.name[: -len(MANIFEST_SUFFIX)]

    @property
    def first_seq(self) -> int:
        return int(self.body["first_seq"])

    @property
    def last_seq(self) -> int:
        return int(self.body["last_seq"])

    @property
    def last_hash(self) -> str:
        return str(self.body["last_hash"])

    @property
    def file(self) -> Path:
        """The segment file beside the manifest (its ``segment`` must name this very file)."""
        return self.path.with_name(self.name + SEGMENT_SUFFIX)


def read_manifest(path: Path) -> Segment:
    """The manifest at ``path``; ValueError if it is not one (its signature is checked apart)."""
    raw = path.read_bytes()
    body = orjson.loads(raw)
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError("not an EMR Guard audit archive manifest")
    for key in ("first_seq", "last_seq", "records"):
        if not isinstance(body.get(key), int):
            raise ValueError(f"'{key}' missing")
    for key in ("segment", "first_prev_hash", "last_hash", "sha256", "prev_manifest", "signature"):
        if not isinstance(body.get(key), str):
            raise ValueError(f"'{key}' missing")
    if "/" in body["segment"] or body["segment"].startswith("."):
        raise ValueError("'segment' is not a file name")
    return Segment(path, body, hashlib.sha256(raw).hexdigest())


def read_segments(archive_dir: str | os.PathLike[str]) -> tuple[list[Segment], list[tuple[Path, str]]]:
    """The readable manifests in the order of the records they sign (not of their file names, which
    anyone can change), and the unreadable ones with why."""
    readable: list[Segment] = []
    unreadable: list[tuple[Path, str]] = []
    for path in manifest_paths(archive_dir):
        try:
            readable.append(read_manifest(path))
        except (OSError, ValueError) as exc:
            unreadable.append((path, str(exc)))
    readable.sort(key=lambda seg: (seg.first_seq, seg.last_seq, seg.name))
    return readable, unreadable


def signature_ok(body: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(base64.b64decode(body.get("signature", "")), signed_message(body))
    except (InvalidSignature, ValueError):
        return False
    return True


def segment_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The segment's lines, in chain order (OSError, EOFError, gzip or zlib errors if it is damaged)."""
    with gzip.open(path, "rb") as fh:
        for line in fh:
            yield orjson.loads(line)


# --- verify ------------------------------------------------------------------------------------


@dataclass
class ArchiveTail:
    """Where the archive's chain ends, and the hashes of the records the live store may also hold."""

    last_seq: int = 0
    last_hash: str = GENESIS
    kept: dict[int, str] = field(default_factory=dict)


def check_segment(
    seg: Segment,
    public_key: Ed25519PublicKey | None,
    result: VerifyResult,
    anchors: Anchors | None,
    keep_from: int | None,
    kept: dict[int, str],
) -> None:
    """Signature, file hash, internal chain and patient rows of one segment, against its manifest."""
    where = f"archive segment {seg.name}"
    body = seg.body
    if public_key is not None and not signature_ok(body, public_key):
        signer = body.get("key_id")
        other = f"; it names key {signer}, not {key_id(public_key)}" if signer != key_id(public_key) else ""
        result.fail(seg.first_seq, f"{where}: manifest signature invalid (forged or edited{other})")
    if seg.name != segment_stem(seg.first_seq, seg.last_seq) or body["segment"] != seg.file.name:
        result.fail(
            seg.first_seq,
            f"{where}: its signed manifest is for records {seg.first_seq}–{seg.last_seq} in "
            f"{body['segment']} (renamed, moved or reordered)",
        )
    if not seg.file.is_file():
        result.fail(seg.first_seq, f"{where}: segment file {seg.file.name} missing (deleted)")
        return
    digest = hashlib.sha256()
    with open(seg.file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != body["sha256"]:
        result.fail(
            seg.first_seq,
            f"{where}: segment file {seg.file.name} does not have the SHA-256 its manifest signed (edited or replaced)",
        )
    expected_seq, prev, count = seg.first_seq, str(body["first_prev_hash"]), 0
    try:
        for line in segment_lines(seg.file):
            seq, prev_hash, stored = int(line["seq"]), str(line["prev_hash"]), str(line["hash"])
            blob = str(line["record"]).encode()
            rwhere = f"{where}: record {seq}"
            if seq != expected_seq:
                result.fail(
                    expected_seq, f"{where}: record {expected_seq} missing (found {seq} in its place)"
                )
            record = check_record(result, rwhere, seq, prev, prev_hash, stored, blob) or {}
            held = {(str(p), str(r)) for p, r in line.get("patients") or []}
            if held != indexed(record):
                result.fail(seq, f"{rwhere}: its patient index rows do not match the record (edited)")
            if anchors is not None:
                anchors.check(seq, stored, result)
            if keep_from is not None and seq >= keep_from - 1:
                kept[seq] = stored
            count += 1
            result.records += 1
            result.archived += 1
            prev, expected_seq = stored, seq + 1
    except (OSError, EOFError, zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        result.fail(
            expected_seq, f"{where}: segment file unreadable after {count} records (damaged or edited: {exc})"
        )
        return
    if count != body["records"] or expected_seq != seg.last_seq + 1 or prev != seg.last_hash:
        result.fail(
            seg.first_seq,
            f"{where}: holds {count} records ending at {expected_seq - 1}, its manifest says "
            f"{body['records']} ending at {seg.last_seq} with another last hash (records removed or added)",
        )


def verify_archive(
    archive_dir: str | os.PathLike[str],
    public_key: Ed25519PublicKey | None,
    result: VerifyResult,
    anchors: Anchors | None = None,
    keep_from: int | None = None,
) -> ArchiveTail:
    """Every segment in chain order: its signature, file, internal chain, and its link to the one
    before (manifest hash, seq, hash). Failures go into ``result`` naming the segment; the hashes of
    records from ``keep_from - 1`` on are kept (the live store may still hold them)."""
    tail = ArchiveTail()
    prev_digest: str | None = GENESIS
    prev_name = "the beginning of the chain"
    readable, unreadable = read_segments(archive_dir)
    for path, why in unreadable:
        result.segments += 1
        result.fail(
            None, f"archive segment {path.name[: -len(MANIFEST_SUFFIX)]}: manifest unreadable ({why})"
        )
    for seg in readable:
        result.segments += 1
        if seg.first_seq > tail.last_seq + 1:
            gap = f"records {tail.last_seq + 1}–{seg.first_seq - 1}"
            result.fail(
                tail.last_seq + 1,
                f"{gap} missing: no archive segment holds them (between {prev_name} and segment {seg.name}: "
                "a segment was removed)",
            )
        elif seg.first_seq <= tail.last_seq:
            result.fail(
                seg.first_seq,
                f"archive segment {seg.name}: records {seg.first_seq}–{min(seg.last_seq, tail.last_seq)} "
                f"are also in {prev_name} (a segment was copied or replaced)",
            )
        elif prev_digest is not None and seg.body["prev_manifest"] != prev_digest:
            result.fail(
                seg.first_seq,
                f"archive segment {seg.name}: does not follow {prev_name} (its manifest names another predecessor: "
                "a segment was replaced)",
            )
        elif seg.body["first_prev_hash"] != tail.last_hash:
            result.fail(
                seg.first_seq,
                f"archive segment {seg.name}: its first record does not follow {prev_name}'s last",
            )
        check_segment(seg, public_key, result, anchors, keep_from, tail.kept)
        tail.last_seq, tail.last_hash = max(tail.last_seq, seg.last_seq), seg.last_hash
        prev_digest, prev_name = seg.digest, f"segment {seg.name}"
    folder = Path(archive_dir)
    sealed = {p.name[: -len(MANIFEST_SUFFIX)] for p in manifest_paths(folder)}
    for stray in sorted(folder.glob("audit-*" + SEGMENT_SUFFIX)):
        if stray.name[: -len(SEGMENT_SUFFIX)] not in sealed:
            result.warnings.append(
                f"archive file {stray.name} has no manifest (an interrupted `emrguard audit archive`: its records "
                "are still in the live store, and the next run replaces it)"
            )
    return tail


# --- write ---------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """A file that hashes what is written to it (the segment's SHA-256 without reading it again)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _write_whole(path: Path, write: Any) -> None:
    """Write through a temporary file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_segment(
    archive_dir: str | os.PathLike[str],
    key: Ed25519PrivateKey,
    first: int,
    last: int,
    previous: Segment | None,
    rows: Iterable[tuple[int, str, str, str, list[list[str]], str]],
    extra: dict[str, Any] | None = None,
) -> Segment:
    """Write records first..last — ``rows`` of (seq, prev_hash, hash, time, patient rows, record
    text), already checked — as a segment and its signed manifest, both fsynced and renamed into
    place (the manifest last) before this returns."""
    folder = Path(archive_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stem = segment_stem(first, last)
    seg_path, man_path = folder / (stem + SEGMENT_SUFFIX), folder / (stem + MANIFEST_SUFFIX)
    prev_hash = previous.last_hash if previous is not None else GENESIS
    stats: dict[str, Any] = {"count": 0, "last_hash": prev_hash, "tmin": None, "tmax": None}

    def write(fh: IO[bytes]) -> None:
        hashing = _HashingWriter(fh)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, compresslevel=6, mtime=0) as gz:
            for seq, line_prev, stored, when, patients, text in rows:
                line = {
                    "seq": seq,
                    "prev_hash": line_prev,
                    "hash": stored,
                    "record": text,
                    "patients": patients,
                }
                gz.write(orjson.dumps(line) + b"\n")
                stats["tmin"] = when if stats["tmin"] is None or when < stats["tmin"] else stats["tmin"]
                stats["tmax"] = when if stats["tmax"] is None or when > stats["tmax"] else stats["tmax"]
                stats["count"] += 1
                stats["last_hash"] = stored
        stats["sha256"], stats["bytes"] = hashing.sha.hexdigest(), hashing.size

    try:
        _write_whole(seg_path, write)
    except BaseException:
        seg_path.with_name(seg_path.name + TMP_SUFFIX).unlink(missing_ok=True)
        raise
    body: dict[str, Any] = {
        "format": FORMAT,
        "segment": seg_path.name,
        "first_seq": first,
        "last_seq": last,
        "records": stats["count"],
        "first_prev_hash": prev_hash,
        "last_hash": stats["last_hash"],
        "time_min": stats["tmin"],
        "time_max": stats["tmax"],
        "sha256": stats["sha256"],
        "bytes": stats["bytes"],
        "prev_manifest": previous.digest if previous is not None else GENESIS,
        **(extra or {}),
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "key_id": key_id(key.public_key()),
    }
    body["signature"] = base64.b64encode(key.sign(signed_message(body))).decode()
    data = canonical(body) + b"\n"
    _write_whole(man_path, lambda fh: fh.write(data))
    return read_manifest(man_path)
