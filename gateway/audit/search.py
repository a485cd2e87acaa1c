"""Audit search (II.2 可查询): who saw what, when, why — by patient, operator, time, purpose,
decision, resource or request id, newest first, paged by a cursor.

One query builder serves the admin API (on the store's thread) and ``emrguard audit search`` (on
its own read-only connection). Every filter is answered from an index: the patient through
``audit_patient (patient, seq)``, the operator through ``audit (operator, time)``, time through
``audit (time)``; the rest narrows what those indexes found. Paging is keyset (``seq < cursor``),
so page 1,000 costs what page 1 costs.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
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
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds")


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
