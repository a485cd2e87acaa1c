"""The store: the system of record (audit trail, alerts, the controls' state)."""

from gateway.store.db import (
    Store,
    StoreClosed,
    StoreConflict,
    StoreError,
    StoreInvalid,
    StoreNotFound,
    utc_now,
)
from gateway.store.schema import SCHEMA

__all__ = [
    "SCHEMA",
    "Store",
    "StoreClosed",
    "StoreConflict",
    "StoreError",
    "StoreInvalid",
    "StoreNotFound",
    "utc_now",
]
