"""The core's tables: the audit trail (hash-chained, gateway/audit/chain.py), its patient index, the
alerts committed with it (II.3) and the forwarding cursors of the audit outbox.

Controls of the notice keep their own tables (``Plugin.schema``: grants in plugins/grants/store.py,
seals in plugins/seal/store.py); the store creates them beside these at start-up. Every statement is
``CREATE ... IF NOT EXISTS``, so opening an existing store is its migration.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id   TEXT NOT NULL UNIQUE,
    time         TEXT NOT NULL,
    operator     TEXT,
    purpose      TEXT,
    interaction  TEXT,
    resource_type TEXT,
    decision     TEXT NOT NULL,
    status       INTEGER NOT NULL,
    record       BLOB NOT NULL,          -- the whole audit record, canonical JSON (gateway/audit/record.py)
    prev_hash    TEXT NOT NULL,          -- hash chain (gateway/audit/chain.py): tamper evidence, II.2
    hash         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_operator_time ON audit (operator, time);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE INDEX IF NOT EXISTS audit_resource ON audit (resource_type, time);
CREATE TABLE IF NOT EXISTS audit_patient (   -- who saw what: one row per patient targeted or disclosed
    seq      INTEGER NOT NULL REFERENCES audit (seq),
    patient  TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('targeted', 'disclosed')),
    PRIMARY KEY (patient, seq, role)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (          -- II.3: anomalous or unauthorised access
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time       TEXT NOT NULL,
    request_id TEXT,
    event      TEXT NOT NULL,
    severity   TEXT NOT NULL,
    operator   TEXT,
    patients   BLOB NOT NULL,                -- JSON list
    detail     BLOB NOT NULL                 -- JSON object
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts (time);
CREATE TABLE IF NOT EXISTS audit_forward (     -- how far each forwarding destination has received
    destination TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL
);
"""
