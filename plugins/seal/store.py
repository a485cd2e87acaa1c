"""The seals table (I.4: 封存): at most one active seal per patient. Nothing is cached: a seal is
in force from the moment the call that made it returns.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import orjson

from gateway.store import Store, StoreConflict, StoreNotFound, utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS seals (           -- I.4: 封存
    id            TEXT PRIMARY KEY,          -- uuid4 hex
    patient       TEXT NOT NULL,             -- "Patient/<id>"
    reason        TEXT NOT NULL,
    case_ref      TEXT NOT NULL,
    authorised    BLOB NOT NULL,             -- JSON list of operator ids who may still access
    sealed_by     TEXT NOT NULL,
    sealed_at     TEXT NOT NULL,
    unsealed_by   TEXT,
    unsealed_at   TEXT,
    unseal_reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS seals_active ON seals (patient) WHERE unsealed_at IS NULL;
CREATE INDEX IF NOT EXISTS seals_patient ON seals (patient, sealed_at);
"""
SEAL_COLUMNS = (
    "id, patient, reason, case_ref, authorised, sealed_by, sealed_at, unsealed_by, unsealed_at, unseal_reason"
)
#: SQLite's default bound on host parameters is 32766; stay well inside it per IN (...) list.
MAX_IN_PARAMS = 900


def seal_row(row: sqlite3.Row) -> dict[str, Any]:
    seal = dict(row)
    seal["authorised"] = orjson.loads(seal["authorised"])
    return seal


class SealStore:
    """Seals in the gateway's store (one statement or transaction each, on the store thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def seal_patient(
        self, patient: str, reason: str, case_ref: str, authorised: list[str], by: str
    ) -> dict[str, Any]:
        """Seal a patient's records; committed (and so in force for the next request) on return.

        StoreConflict if the patient is already sealed (at most one active seal per patient).
        """
        row = (
            uuid.uuid4().hex,
            patient,
            reason,
            case_ref,
            orjson.dumps(list(authorised)),
            by,
            utc_now(),
        )

        def seal(db: sqlite3.Connection) -> dict[str, Any]:
            active = db.execute(
                "SELECT sealed_at, case_ref FROM seals WHERE patient = ? AND unsealed_at IS NULL", (patient,)
            ).fetchone()
            if active is not None:
                raise StoreConflict(
                    f"{patient} is already sealed (since {active['sealed_at']}, case {active['case_ref']})"
                )
            try:
                db.execute(
                    "INSERT INTO seals (id, patient, reason, case_ref, authorised, sealed_by, sealed_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:  # another process sealed it in between
                raise StoreConflict(f"{patient} is already sealed ({exc})") from None
            return seal_row(
                db.execute(f"SELECT {SEAL_COLUMNS} FROM seals WHERE id = ?", (row[0],)).fetchone()
            )

        return await self.store.write(seal)

    async def unseal_patient(self, patient: str, by: str, reason: str) -> dict[str, Any]:
        """Lift the patient's active seal; StoreNotFound if the patient is not sealed."""
        now = utc_now()

        def unseal(db: sqlite3.Connection) -> dict[str, Any]:
            active = db.execute(
                "SELECT id FROM seals WHERE patient = ? AND unsealed_at IS NULL", (patient,)
            ).fetchone()
            if active is None:
                raise StoreNotFound(f"{patient} is not sealed")
            db.execute(
                "UPDATE seals SET unsealed_by = ?, unsealed_at = ?, unseal_reason = ? WHERE id = ?",
                (by, now, reason, active["id"]),
            )
            return seal_row(
                db.execute(f"SELECT {SEAL_COLUMNS} FROM seals WHERE id = ?", (active["id"],)).fetchone()
            )

        return await self.store.write(unseal)

    async def active_seals(self, patients: list[str]) -> dict[str, dict[str, Any]]:
        """The active seal of each of ``patients`` that is sealed, by patient (called on every request).

        One query on the partial unique index (a few hundred patients per statement at most); no
        store round trip at all for a request that names no patient.
        """
        wanted = sorted(set(patients))
        if not wanted:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(wanted), MAX_IN_PARAMS):
            chunk = wanted[i : i + MAX_IN_PARAMS]
            marks = ",".join("?" * len(chunk))
            rows = await self.store.read(
                f"SELECT {SEAL_COLUMNS} FROM seals WHERE unsealed_at IS NULL AND patient IN ({marks})", chunk
            )
            for row in rows:
                found[row["patient"]] = seal_row(row)
        return found

    async def seal_history(
        self, patient: str | None = None, *, active_only: bool = False
    ) -> list[dict[str, Any]]:
        """Seals, active and lifted, newest first (II.2: who sealed and unsealed what, when, why)."""
        where, args = [], []
        if patient is not None:
            where.append("patient = ?")
            args.append(patient)
        if active_only:
            where.append("unsealed_at IS NULL")
        sql = f"SELECT {SEAL_COLUMNS} FROM seals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY sealed_at DESC, id"
        return [seal_row(r) for r in await self.store.read(sql, args)]
