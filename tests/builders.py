"""Shared builders for the tests: audit records, admin request bodies, OperationOutcome readers."""

from __future__ import annotations

from typing import Any


def audit_record(i: int, **kw: Any) -> dict[str, Any]:
    base = {
        "request_id": f"req-{i:05d}",
        "time": f"2026-12-01T08:{i // 60 % 60:02d}:{i % 60:02d}.000+00:00",
        "operator": f"op-{i % 4}",
        "operator_name": "张护士",
        "roles": ["nurse"],
        "purpose": "TREAT",
        "client_address": "10.1.2.3",
        "method": "GET",
        "path": "Observation",
        "query": f"subject=Patient/p{i % 7}",
        "interaction": "search-type",
        "resource_type": "Observation",
        "resource_id": None,
        "decision": "allow",
        "status": 200,
        "reasons": [],
        "patients_targeted": [f"Patient/p{i % 7}"],
        "patients_disclosed": [f"Patient/p{i % 7}"],
        "resources_disclosed": [f"Observation/o{i}"],
    }
    base.update(kw)
    return base


def rotation(**kw: Any) -> dict[str, Any]:
    body = {
        "kind": "rotation",
        "operator": "u-student-001",
        "dept": "cardiology",
        "purposes": ["TRAIN", "TREAT"],
        "start": "2026-03-01T00:00:00Z",
        "end": "2026-03-31T23:59:59Z",
        "scope": {"types": ["Observation", "Condition"], "interactions": ["read", "search-type"]},
    }
    body.update(kw)
    return body


def vendor(**kw: Any) -> dict[str, Any]:
    body = {
        "kind": "vendor",
        "operator": "u-vendor-001",
        "purposes": ["HOPERAT"],
        "start": "2026-03-01T00:00:00Z",
        "end": "2026-06-01T00:00:00Z",
        "agreement": "AG-2026-017",
        "supervisor": "u-it-001",
        "scope": {
            "types": ["Observation"],
            "fields": {"Observation": ["code", "value"]},
            "interactions": ["search-type"],
        },
    }
    body.update(kw)
    return body


def issue(body: dict[str, Any]) -> dict[str, Any]:
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]


def rule_and_clause(body: dict[str, Any]) -> tuple[str, str | None]:
    coding = issue(body)["details"]["coding"]
    clause = [c["code"] for c in coding if c["system"].endswith("clause")]
    return coding[0]["code"], clause[0] if clause else None
