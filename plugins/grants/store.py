"""The grants table (II.1: time-bound permissions): trainee rotations, vendor agreements, exports.

The store keeps them; whether one is in force *now* is the policy's call (it gets the time).
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import orjson

from gateway.store import Store, StoreConflict, StoreInvalid, StoreNotFound, utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (          -- II.1: time-bound permissions
    id            TEXT PRIMARY KEY,          -- uuid4 hex
    kind          TEXT NOT NULL CHECK (kind IN ('rotation', 'vendor', 'export')),
    operator      TEXT NOT NULL,             -- the holder's token `sub`
    dept          TEXT,
    purposes      BLOB NOT NULL,             -- JSON list of PurposeOfUse codes
    start         TEXT NOT NULL,             -- RFC 3339, UTC ("Z"), as given
    "end"         TEXT NOT NULL,
    scope         BLOB NOT NULL,             -- JSON {"types": [..], "fields": {Type: [..]}, "interactions": [..]}
    agreement     TEXT,                      -- vendor: the agreement's reference
    supervisor    TEXT,                      -- vendor: who supervises the service (II.1)
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT,
    revoked_by    TEXT,
    revoke_reason TEXT,
    CHECK (julianday(start) IS NOT NULL AND julianday("end") IS NOT NULL AND julianday(start) < julianday("end")),
    CHECK (kind <> 'rotation' OR dept IS NOT NULL),
    CHECK (kind <> 'vendor' OR (agreement IS NOT NULL AND supervisor IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS grants_operator ON grants (operator, revoked_at);
"""
GRANT_KINDS = ("rotation", "vendor", "export")
GRANT_COLUMNS = (
    'id, kind, operator, dept, purposes, start, "end", scope, agreement, supervisor,'
    " created_by, created_at, revoked_at, revoked_by, revoke_reason"
)
JSON_COLUMNS = ("purposes", "scope")


def grant_row(row: sqlite3.Row) -> dict[str, Any]:
    grant = dict(row)
    for key in JSON_COLUMNS:
        grant[key] = orjson.loads(grant[key])
    return grant


class GrantStore:
    """Grants in the gateway's store (one statement or transaction each, on the store thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create_grant(self, grant: dict[str, Any], by: str) -> dict[str, Any]:
        """Store a new grant (fields as in the ``grants`` table; ``id`` and ``created_*`` are set here).

        ``start`` and ``end`` are kept exactly as given, never rounded or extended: a trainee's
        rotation cannot outlast itself (II.1). The admin API validates first; the table's CHECKs
        (start < end, rotation needs dept, vendor needs agreement and supervisor) are the backstop
        and raise StoreInvalid.
        """
        row = (
            uuid.uuid4().hex,
            grant.get("kind"),
            grant.get("operator"),
            grant.get("dept"),
            orjson.dumps(list(grant.get("purposes") or [])),
            grant.get("start"),
            grant.get("end"),
            orjson.dumps(grant.get("scope") or {}),
            grant.get("agreement"),
            grant.get("supervisor"),
            by,
            utc_now(),
        )

        def insert(db: sqlite3.Connection) -> dict[str, Any]:
            try:
                db.execute(
                    'INSERT INTO grants (id, kind, operator, dept, purposes, start, "end", scope,'
                    " agreement, supervisor, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                raise StoreInvalid(f"grant refused by the store: {exc}") from None
            return grant_row(
                db.execute(f"SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?", (row[0],)).fetchone()
            )

        return await self.store.write(insert)

    async def get_grant(self, grant_id: str) -> dict[str, Any] | None:
        rows = await self.store.read(f"SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?", (grant_id,))
        return grant_row(rows[0]) if rows else None

    async def list_grants(
        self, operator: str | None = None, include_revoked: bool = False
    ) -> list[dict[str, Any]]:
        """Grants, newest first; by default only those not revoked (expired ones are listed too)."""
        where, args = [], []
        if operator is not None:
            where.append("operator = ?")
            args.append(operator)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        sql = f"SELECT {GRANT_COLUMNS} FROM grants"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id"
        return [grant_row(r) for r in await self.store.read(sql, args)]

    async def revoke_grant(self, grant_id: str, by: str, reason: str) -> dict[str, Any]:
        """Revoke now; StoreNotFound if there is no such grant, StoreConflict if already revoked."""
        now = utc_now()

        def revoke(db: sqlite3.Connection) -> dict[str, Any]:
            cur = db.execute(
                "UPDATE grants SET revoked_at = ?, revoked_by = ?, revoke_reason = ?"
                " WHERE id = ? AND revoked_at IS NULL",
                (now, by, reason, grant_id),
            )
            row = db.execute(f"SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?", (grant_id,)).fetchone()
            if row is None:
                raise StoreNotFound(f"no grant with id '{grant_id}'")
            if cur.rowcount == 0:
                raise StoreConflict(f"grant '{grant_id}' was already revoked at {row['revoked_at']}")
            return grant_row(row)

        return await self.store.write(revoke)

    async def grants_for(self, operator: str) -> list[dict[str, Any]]:
        """The operator's grants that are not revoked (one indexed query; called on every request).

        Whether a grant is in force *now* (start <= time < end) is the policy's call.
        """
        rows = await self.store.read(
            f"SELECT {GRANT_COLUMNS} FROM grants WHERE operator = ? AND revoked_at IS NULL ORDER BY start",
            (operator,),
        )
        return [grant_row(r) for r in rows]
