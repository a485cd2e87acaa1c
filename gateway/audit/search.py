"""Audit search (II.2 可查询): who saw what, when, why — by patient, operator, time, purpose,
decision, resource or request id, newest first, paged by a cursor.

One query builder serves the admin API (on the store's thread) and ``emrguard audit search`` (on
its own read-only connection). Every filter is answered from an index: the patient through
``audit_patient (patient, seq)``, the operator through ``audit (operator, time)``, time through
``audit (time)``; the rest narrows what those indexes found. Paging is keyset (``seq < cursor``),
so page 1,000 costs what page 1 costs.

Records older than the retention window may have been moved into archive segments
(gateway/audit/archive.py; 网络安全法 第二十一条): :func:`run_all` and :func:`iter_all` read the
live store first, then the archive, newest first, as one trail (seq is global, so the same cursor
pages across both). The archive is matched by :func:`matches`, the same filters in Python.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_LIMIT = 1000


class TimeError(ValueError):
    """A time the search cannot read; names the parameter."""

    def __init__(self, key: str, value: str) -> None:
        super().__init__(f"'{key}': '{value[:64]}' is not a time")
        self.key = key


def audit_time(value: str, key: str = "from") -> str:
    """A time as the records store it (UTC, milliseconds, "+00:00"), from RFC 3339 / ISO 8601 with
    any offset: ``2026-12-01T08:00:00Z``, ``2026-12-01T16:00:00+08:00`` (China time), or no offset
    (read as UTC); a date alone is its midnight. Records compare as text in that one form."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise TimeError(key, value) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC).isoformat(timespec="milliseconds")
    except OverflowError:  # year 1 east of UTC, year 9999 west of it: the ends of time (fault review)
        return "0001-01-01T00:00:00.000+00:00" if parsed.year < 5000 else "9999-12-31T23:59:59.999+00:00"


@dataclass
class AuditQuery:
    patient: str | None = None
    operator: str | None = None
    time_from: str | None = None  # RFC 3339 with its offset (audit_time), inclusive
    time_to: str | None = None  # exclusive
    purpose: str | None = None
    decision: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    request_id: str | None = None
    cursor: int | None = None  # seq of the last record of the previous page
    limit: int = 100

    def __post_init__(self) -> None:
        if self.time_from is not None:
            self.time_from = audit_time(self.time_from, "from")
        if self.time_to is not None:
            self.time_to = audit_time(self.time_to, "to")

    @classmethod
    def from_mapping(cls, q: Any) -> AuditQuery:
        def text(key: str) -> str | None:
            value = q.get(key)
            return str(value) if value not in (None, "") else None

        limit = int(q.get("limit") or 100)
        cursor = q.get("cursor")
        return cls(
            patient=text("patient"),
            operator=text("operator"),
            time_from=text("from"),
            time_to=text("to"),
            purpose=text("purpose"),
            decision=text("decision"),
            resource_type=text("resource_type"),
            resource_id=text("resource_id"),
            request_id=text("request_id"),
            cursor=int(cursor) if cursor not in (None, "") else None,
            limit=max(1, min(limit, MAX_LIMIT)),
        )


def build_sql(q: AuditQuery) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if q.patient:
        sql = "SELECT a.seq, a.record FROM audit_patient p JOIN audit a ON a.seq = p.seq"
        where.append("p.patient = ?")
        args.append(q.patient)
        seq_col = "p.seq"
    else:
        sql = "SELECT a.seq, a.record FROM audit a"
        seq_col = "a.seq"
    for column, value in (
        ("a.operator", q.operator),
        ("a.purpose", q.purpose),
        ("a.decision", q.decision),
        ("a.resource_type", q.resource_type),
        ("a.request_id", q.request_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if q.resource_id is not None:
        where.append("json_extract(a.record, '$.resource_id') = ?")
        args.append(q.resource_id)
    if q.time_from is not None:
        where.append("a.time >= ?")
        args.append(q.time_from)
    if q.time_to is not None:
        where.append("a.time < ?")
        args.append(q.time_to)
    if q.cursor is not None:
        where.append(f"{seq_col} < ?")
        args.append(q.cursor)
    if where:
        sql += " WHERE " + " AND ".join(where)
    if q.patient:
        sql += " GROUP BY p.seq"  # a patient both targeted and disclosed is one record
    sql += f" ORDER BY {seq_col} DESC LIMIT ?"
    args.append(q.limit)
    return sql, args


def run(db: sqlite3.Connection, q: AuditQuery) -> dict[str, Any]:
    """One page: {"records": [...], "next_cursor": seq or None}."""
    sql, args = build_sql(q)
    rows = db.execute(sql, args).fetchall()
    records = [orjson.loads(blob) for _, blob in rows]
    return {"records": records, "next_cursor": rows[-1][0] if len(rows) == q.limit else None}


def matches(q: AuditQuery, record: dict[str, Any]) -> bool:
    """What :func:`build_sql` selects, for one record outside the database (an archived one): the
    patient in its index (targeted or disclosed), the other filters on the record's own fields."""
    if q.patient is not None and q.patient not in (record.get("patients_targeted") or []) + (
        record.get("patients_disclosed") or []
    ):
        return False
    for key in ("operator", "purpose", "decision", "resource_type", "request_id", "resource_id"):
        wanted = getattr(q, key)
        if wanted is not None and record.get(key) != wanted:
            return False
    when = record.get("time")
    if q.time_from is not None and not (isinstance(when, str) and when >= q.time_from):
        return False
    return not (q.time_to is not None and not (isinstance(when, str) and when < q.time_to))


def _live_first(db: sqlite3.Connection) -> int | None:
    row = db.execute("SELECT MIN(seq) FROM audit").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def iter_all(
    db: sqlite3.Connection, q: AuditQuery, archive_dir: str | os.PathLike[str] | None
) -> Iterator[dict[str, Any]]:
    """Every matching record, newest first: the live store page by page, then the archive
    segments (a record both archived and live, after an interrupted move, is listed once)."""
    page_query = replace(q, limit=max(1, min(q.limit, MAX_LIMIT)))
    while True:
        page = run(db, page_query)
        yield from page["records"]
        if page["next_cursor"] is None:
            break
        page_query.cursor = page["next_cursor"]
    if archive_dir is not None:
        for _, record in search_archive(archive_dir, q, _live_first(db)):
            yield record


def run_all(
    db: sqlite3.Connection, q: AuditQuery, archive_dir: str | os.PathLike[str] | None
) -> dict[str, Any]:
    """One page across live store and archive: {"records": [...], "next_cursor": seq or None}."""
    page = run(db, q)
    if page["next_cursor"] is not None or archive_dir is None:
        return page
    records = list(page["records"])
    last: int | None = None
    for seq, record in search_archive(archive_dir, q, _live_first(db)):
        records.append(record)
        last = seq
        if len(records) == q.limit:
            break
    return {"records": records, "next_cursor": last if len(records) == q.limit else None}


def search_archive(
    archive_dir: str | os.PathLike[str], q: AuditQuery, before_seq: int | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(seq, record) of archived records matching ``q``, newest first, below ``before_seq`` (the
    live store's first record, so a record both archived and live is listed once). Segments
    outside the query's time range are skipped by their manifest; the others are read whole.
    Search trusts the files; ``emrguard audit verify`` is what checks them."""
    from gateway.audit.segments import read_segments, segment_lines

    bound = before_seq if q.cursor is None else min(q.cursor, before_seq or q.cursor)
    for seg in reversed(read_segments(archive_dir)[0]):
        if bound is not None and seg.first_seq >= bound:
            continue
        if q.time_from is not None and str(seg.body.get("time_max", "~")) < q.time_from:
            continue
        if q.time_to is not None and str(seg.body.get("time_min", "")) >= q.time_to:
            continue
        hits: list[tuple[int, dict[str, Any]]] = []
        for line in segment_lines(seg.file):
            seq = int(line["seq"])
            if bound is not None and seq >= bound:
                break
            if q.patient is not None and not any(p == q.patient for p, _ in line.get("patients") or []):
                continue
            record = orjson.loads(line["record"])
            if matches(q, record):
                hits.append((seq, record))
        yield from reversed(hits)
