"""Retention and archives of the audit trail (II.2; 网络安全法 第二十一条: network logs kept at least six
months): records older than the retention window move into sealed, signed, chain-linked segments;
`audit verify` and `audit search` span archive and live store; no record younger than the window
moves; a tampered segment is named; a crash mid-move loses and duplicates nothing.

A real SQLite file written through the real Store (so the chain is real), real Ed25519 keys made as
`emrguard keys init` makes them, the real CLI entry point."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import archive, segments
from gateway.audit.chain import GENESIS, canonical, chain_hash, load_private_key
from gateway.audit.checkpoints import Checkpointer, create_signing_key
from gateway.cli import main
from gateway.store import Store
from tests.builders import audit_record

OLD, YOUNG = 250, 5  # records older than 180 days, then records of the last days
NOW = datetime.now(UTC)


def when(days_ago: float, i: int = 0) -> str:
    return (NOW - timedelta(days=days_ago) + timedelta(seconds=i)).isoformat(timespec="milliseconds")


def record(i: int, days_ago: float) -> dict[str, Any]:
    return audit_record(
        i,
        time=when(days_ago, i),
        operator=f"op-{i % 3}",
        patients_targeted=[f"Patient/p{i % 7}"],
        patients_disclosed=[f"Patient/p{i % 7}"] if i % 2 else [],
    )


class _Log:
    def info(self, *a: Any, **k: Any) -> None: ...

    def error(self, *a: Any, **k: Any) -> None: ...


async def write_trail(tmp_path: Path, key: Path, ages: list[float]) -> dict[str, Path]:
    """Records (one per age, days ago) through the real Store — record i is seq i — with a checkpoint
    after every 100 and the clean shutdown's final one."""
    db, checkpoints = tmp_path / "audit.sqlite", tmp_path / "checkpoints.jsonl"
    store = Store(str(db))
    await store.start()
    cp = Checkpointer(store, str(key), str(checkpoints), 3600, _Log())
    for start in range(1, len(ages) + 1, 50):  # 50 at a time share a commit, in order
        batch = range(start, min(start + 50, len(ages) + 1))
        await asyncio.gather(*(store.insert_audit(record(i, ages[i - 1])) for i in batch))
        if batch[-1] % 100 == 0:
            await cp.checkpoint()
    await cp.close()
    await store.close()
    return {"db": db, "checkpoints": checkpoints, "key": key, "archive": tmp_path / "archive"}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, audit_signing_key: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("trail")
    return asyncio.run(write_trail(folder, audit_signing_key, [400.0] * OLD + [10.0] * YOUNG))


@pytest.fixture
def trail(written: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A copy of the module's trail for each test to move and tamper with."""
    copy = dict(written, archive=tmp_path / "archive")
    for name in ("db", "checkpoints"):
        copy[name] = Path(shutil.copy(written[name], tmp_path / written[name].name))
    return copy


def cli(trail: dict[str, Path], *args: str) -> list[str]:
    return [
        *args,
        "--db",
        str(trail["db"]),
        "--archive-dir",
        str(trail["archive"]),
    ]


def run_archive(trail: dict[str, Path], capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, Any]:
    code = main(
        [
            *cli(trail, "audit", "archive"),
            "--signing-key",
            str(trail["key"]),
            "--checkpoints",
            str(trail["checkpoints"]),
            "--segment-records",
            "100",
            *extra,
        ]
    )
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def run_verify(trail: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(
        [
            *cli(trail, "audit", "verify"),
            # (None: a trail run without checkpoints; a named file that is missing is a failure)
            *(["--checkpoints", str(trail["checkpoints"])] if trail.get("checkpoints") else []),
            "--public-key",
            str(trail["key"]),
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def search(trail: dict[str, Path], capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main([*cli(trail, "audit", "search"), *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def live_seqs(trail: dict[str, Path]) -> list[int]:
    with sqlite3.connect(trail["db"]) as db:
        return [s for (s,) in db.execute("SELECT seq FROM audit ORDER BY seq")]


def manifests(trail: dict[str, Path]) -> list[Path]:
    return segments.manifest_paths(trail["archive"])


def all_request_ids(trail: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [r["request_id"] for r in search(trail, capsys, "--all")]


# --- the move ----------------------------------------------------------------------------------


async def test_old_records_move_and_verify_and_search_span_archive_and_store(
    trail: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_archive(trail, capsys)
    assert code == 0 and report["records"] == OLD and (report["first_seq"], report["last_seq"]) == (1, OLD)
    assert report["segments"] == [
        "audit-000000000001-000000000100",
        "audit-000000000101-000000000200",
        "audit-000000000201-000000000250",
    ]
    assert live_seqs(trail) == list(range(OLD + 1, OLD + YOUNG + 1))
    # The chain goes on: the live store's first record follows the last archived one.
    last = segments.read_manifest(manifests(trail)[-1])
    with sqlite3.connect(trail["db"]) as db:
        assert (
            db.execute("SELECT prev_hash FROM audit WHERE seq = ?", (OLD + 1,)).fetchone()[0]
            == last.last_hash
        )
        assert db.execute("SELECT COUNT(*) FROM audit_patient WHERE seq <= ?", (OLD,)).fetchone()[0] == 0
    code, out = run_verify(trail, capsys)
    assert code == 0 and out["ok"] and out["records"] == OLD + YOUNG
    assert out["archive"] == {"segments": 3, "records": OLD} and out["warnings"] == []
    # Search: patient, operator, time — archived and live records alike, newest first, once each.
    found = search(trail, capsys, "--patient", "Patient/p3", "--all")
    expected = [i for i in range(OLD + YOUNG, 0, -1) if i % 7 == 3]
    assert [r["request_id"] for r in found] == [f"req-{i:05d}" for i in expected]
    found = search(trail, capsys, "--operator", "op-1", "--limit", "5")
    assert [r["request_id"] for r in found] == [f"req-{i:05d}" for i in (253, 250, 247, 244, 241)]
    found = search(trail, capsys, "--from", when(400, 10), "--to", when(400, 13), "--all")
    assert [r["request_id"] for r in found] == ["req-00012", "req-00011", "req-00010"]
    assert search(trail, capsys, "--request-id", "req-00042")[0]["request_id"] == "req-00042"
    ids = all_request_ids(trail, capsys)
    assert len(ids) == len(set(ids)) == OLD + YOUNG
    # A second run finds nothing more to move: what is left is inside the retention window.
    code, report = run_archive(trail, capsys)
    assert code == 0 and report["records"] == 0 and "not older than" in report["stopped"]


async def test_pages_across_the_live_store_and_the_archive(
    trail: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.audit.search import AuditQuery, run_all

    assert run_archive(trail, capsys)[0] == 0
    db = sqlite3.connect(f"file:{trail['db']}?mode=ro", uri=True)
    seen: list[str] = []
    query = AuditQuery(operator="op-2", limit=4)
    while True:
        page = run_all(db, query, trail["archive"])
        seen += [r["request_id"] for r in page["records"]]
        if page["next_cursor"] is None:
            break
        query.cursor = page["next_cursor"]
    db.close()
    assert seen == [f"req-{i:05d}" for i in range(OLD + YOUNG, 0, -1) if i % 3 == 2]


async def test_the_newest_record_always_stays_live(
    tmp_path: Path, audit_signing_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every record is old: all but the chain's head move (the gateway's chain continues from it)."""
    trail = await write_trail(tmp_path, audit_signing_key, [300.0] * 30)
    code, report = run_archive(trail, capsys)
    assert code == 0 and report["records"] == 29 and live_seqs(trail) == [30]
    assert run_verify(trail, capsys)[0] == 0


async def test_the_move_runs_beside_a_gateway_that_keeps_writing(
    tmp_path: Path, audit_signing_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway does not stop for the archive: its writer and the move's short delete
    transactions take turns, and its chain goes on from the record the archive left live."""
    db = tmp_path / "audit.sqlite"
    store = Store(str(db))
    await store.start()
    for start in range(1, 301, 50):
        await asyncio.gather(*(store.insert_audit(record(i, 400.0)) for i in range(start, start + 50)))

    async def gateway() -> None:
        for i in range(301, 401):
            await store.insert_audit(record(i, 1.0))

    key = load_private_key(audit_signing_key)
    move = asyncio.to_thread(
        archive.archive, db, tmp_path / "archive", key, retention_days=180, segment_records=100, chunk=20
    )
    report, _ = await asyncio.gather(move, gateway())
    await store.close()
    trail = {
        "db": db,
        "archive": tmp_path / "archive",
        "key": audit_signing_key,
        "checkpoints": None,
    }
    assert report.records in (299, 300) and live_seqs(trail)[-1] == 400
    code, out = run_verify(trail, capsys)
    assert code == 0 and out["records"] == 400
    ids = all_request_ids(trail, capsys)
    assert len(ids) == len(set(ids)) == 400


# --- retention (网络安全法 第二十一条) ---------------------------------------------------------------


async def test_records_younger_than_the_retention_window_are_refused(
    trail: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (NOW - timedelta(days=100)).date().isoformat()
    code, err = run_archive(trail, capsys, "--before", before)
    assert code == 2 and "网络安全法 第二十一条" in err and "audit_retention_days" in err
    assert not manifests(trail) and len(live_seqs(trail)) == OLD + YOUNG
    # Nor can the window be set shorter than six months, by the setting or any other way.
    monkeypatch.setenv("EMRGUARD_AUDIT_RETENTION_DAYS", "90")
    code, err = run_archive(trail, capsys)
    assert code == 2 and "网络安全法 第二十一条" in err and len(live_seqs(trail)) == OLD + YOUNG
    with pytest.raises(archive.RetentionError):
        archive.cutoff(179)
    # --before inside what may move is honoured: only records before it go.
    monkeypatch.delenv("EMRGUARD_AUDIT_RETENTION_DAYS")
    code, report = run_archive(trail, capsys, "--before", when(400, 51))
    assert code == 0 and report["last_seq"] == 50 and live_seqs(trail)[0] == 51


async def test_a_young_record_among_old_ones_stops_the_move_there(
    tmp_path: Path, audit_signing_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Archiving moves a prefix of the chain and never a record younger than the window, wherever it is."""
    ages = [400.0] * 40 + [1.0] + [400.0] * 20
    trail = await write_trail(tmp_path, audit_signing_key, ages)
    code, report = run_archive(trail, capsys)
    assert code == 0 and report["last_seq"] == 40 and "record 41 is not older" in report["stopped"]
    assert live_seqs(trail)[0] == 41
    assert run_verify(trail, capsys)[0] == 0


async def test_a_tampered_live_record_is_never_sealed(
    trail: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(trail["db"]) as db:
        db.execute("UPDATE audit SET record = replace(record, 'op-1', 'op-x') WHERE seq = 151")
    code, err = run_archive(trail, capsys)
    assert code == 1 and "record 151" in err and "nothing was archived" in err
    # The segment before the bad record was sealed and moved; nothing from the bad one on.
    assert live_seqs(trail)[0] == 101 and len(manifests(trail)) == 1


# --- tamper evidence of the archive -------------------------------------------------------------


@pytest.fixture
async def archived(trail: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    assert run_archive(trail, capsys)[0] == 0
    return trail


def seg_file(trail: dict[str, Path], n: int) -> Path:
    return segments.read_manifest(manifests(trail)[n]).file


def assert_broken(trail: dict[str, Path], capsys: pytest.CaptureFixture[str], *words: str) -> dict[str, Any]:
    code, out = run_verify(trail, capsys)
    text = " | ".join(out["problems"])
    assert code == 1 and not out["ok"], out
    for word in words:
        assert word in text, text
    return out


async def test_an_edited_byte_of_a_segment_is_named(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = seg_file(archived, 1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert_broken(archived, capsys, "audit-000000000101-000000000200", "SHA-256")


async def test_an_edited_record_recompressed_is_named_by_record(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = seg_file(archived, 0)
    lines = [orjson.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines()]
    lines[41]["record"] = lines[41]["record"].replace('"op-0"', '"op-x"')
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines)))
    out = assert_broken(archived, capsys, "audit-000000000001-000000000100", "record 42", "edited")
    assert out["first_broken_seq"] == 1 or out["first_broken_seq"] == 42


async def test_a_dropped_segment_is_named(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    middle = segments.read_manifest(manifests(archived)[1])
    middle.file.unlink()
    middle.path.unlink()
    out = assert_broken(archived, capsys, "records 101–200 missing", "audit-000000000001-000000000100")
    assert out["first_broken_seq"] == 101


async def test_a_dropped_last_segment_is_named(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    last = segments.read_manifest(manifests(archived)[-1])
    last.file.unlink()
    last.path.unlink()
    out = assert_broken(archived, capsys, "records 201–250 missing")
    assert out["first_broken_seq"] == 251


async def test_a_dropped_first_segment_is_named(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    first = segments.read_manifest(manifests(archived)[0])
    first.file.unlink()
    first.path.unlink()
    assert_broken(archived, capsys, "records 1–100 missing")


async def test_reordered_segments_are_named(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = (segments.read_manifest(p) for p in manifests(archived)[:2])
    tmp = archived["archive"] / "swap"
    tmp.mkdir()
    for seg in (a, b):
        shutil.move(seg.path, tmp / seg.path.name)
        shutil.move(seg.file, tmp / seg.file.name)
    for src, dst in ((a, b), (b, a)):  # each segment's files under the other's names
        shutil.move(tmp / src.path.name, dst.path)
        shutil.move(tmp / src.file.name, dst.file)
    assert_broken(archived, capsys, "audit-000000000001-000000000100", "renamed, moved or reordered")


async def test_an_edited_manifest_is_named(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    seg = segments.read_manifest(manifests(archived)[2])
    body = dict(seg.body, time_min=when(500))  # e.g. to hide the segment from a search by time
    seg.path.write_bytes(canonical(body) + b"\n")
    assert_broken(archived, capsys, "audit-000000000201-000000000250", "signature invalid")


async def test_a_segment_forged_without_the_key_is_named(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Rewrite the last segment (a record edited, the chain recomputed, the manifest re-signed) with
    a key that is not the gateway's: the chain inside holds, the signature does not."""
    seg = segments.read_manifest(manifests(archived)[-1])
    lines = [orjson.loads(x) for x in gzip.decompress(seg.file.read_bytes()).splitlines()]
    lines[5]["record"] = lines[5]["record"].replace('"op-', '"forged-op-')
    prev = lines[0]["prev_hash"]
    for line in lines:
        line["prev_hash"], line["hash"] = prev, chain_hash(prev, line["record"].encode())
        prev = line["hash"]
    with sqlite3.connect(archived["db"]) as db:  # and the live store re-linked to the forged tail
        db.execute("UPDATE audit SET prev_hash = ? WHERE seq = ?", (prev, OLD + 1))
    data = gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    seg.file.write_bytes(data)
    import base64
    import hashlib

    forger = Ed25519PrivateKey.generate()
    body = {k: v for k, v in seg.body.items() if k != "signature"}
    body.update(last_hash=prev, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    body["signature"] = base64.b64encode(forger.sign(segments.signed_message(body))).decode()
    seg.path.write_bytes(canonical(body) + b"\n")
    out = assert_broken(archived, capsys, "audit-000000000201-000000000250", "signature invalid")
    assert out["first_broken_seq"] == 201


async def test_without_the_archive_the_moved_records_are_missing(
    archived: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["audit", "verify", "--db", str(archived["db"]), "--archive-dir", str(archived["archive"] / "none")]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and "records 1–250 missing" in out["problems"][0]


# --- a crash mid-move ----------------------------------------------------------------------------


async def test_a_crash_between_sealing_and_deleting_loses_and_duplicates_nothing(
    trail: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The steps of the move run one by one, as a crash would leave them: segment and manifest
    sealed, rows not deleted — then some deleted — then the next run finishes."""
    key = load_private_key(trail["key"])
    cut = archive.cutoff(180)
    db = archive.connect(trail["db"])
    try:
        seg = archive.seal(db, trail["archive"], key, 1, 100, None, cut)  # ... crash
    finally:
        db.close()
    code, out = run_verify(trail, capsys)
    assert (
        code == 0
        and out["records"] == OLD + YOUNG
        and "both in the archive and in the live store" in out["warnings"][0]
    )
    ids = all_request_ids(trail, capsys)
    assert len(ids) == len(set(ids)) == OLD + YOUNG  # listed once each
    db = archive.connect(trail["db"])
    try:  # the next run starts deleting, and crashes after the first chunk
        kept = archive.sealed_hashes(seg, key.public_key())
        archive.delete_archived(db, 1, 30, kept, chunk=30)
    finally:
        db.close()
    assert live_seqs(trail)[0] == 31
    code, out = run_verify(trail, capsys)
    assert code == 0 and out["records"] == OLD + YOUNG
    ids = all_request_ids(trail, capsys)
    assert len(ids) == len(set(ids)) == OLD + YOUNG
    # A crash while the next segment was being written leaves a temporary file and an unsealed one.
    (trail["archive"] / "audit-000000000101-000000000200.jsonl.gz.tmp").write_bytes(b"partial")
    (trail["archive"] / "audit-000000000101-000000000200.jsonl.gz").write_bytes(b"unsealed")
    code, out = run_verify(trail, capsys)
    assert code == 0 and any("has no manifest" in w for w in out["warnings"])
    code, report = run_archive(trail, capsys)  # finishes the move, then goes on
    assert code == 0 and report["resumed"] == 70 and report["records"] == OLD - 100
    assert live_seqs(trail) == list(range(OLD + 1, OLD + YOUNG + 1))
    code, out = run_verify(trail, capsys)
    assert code == 0 and out["warnings"] == [] and out["records"] == OLD + YOUNG
    ids = all_request_ids(trail, capsys)
    assert len(ids) == len(set(ids)) == OLD + YOUNG
    assert not list(trail["archive"].glob("*.tmp"))


async def test_the_archive_key_is_the_one_that_signed_it(
    trail: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Extending an archive with another key is refused, nothing deleted: one archive, one signer."""
    assert run_archive(trail, capsys, "--before", when(400, 51))[0] == 0
    other, _, _ = create_signing_key(tmp_path / "other")
    code, err = run_archive(dict(trail, key=other), capsys)
    assert code == 1 and "not signed by this key" in err and live_seqs(trail)[0] == 51


def test_genesis_is_what_the_first_segment_follows(tmp_path: Path) -> None:
    assert segments.segment_stem(1, 100) == "audit-000000000001-000000000100" and len(GENESIS) == 64
