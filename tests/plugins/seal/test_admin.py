"""/admin/seals on a real app (I.4): in force at once, lifted, history kept; one of concurrent seals wins."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.runtime import GATEWAY
from plugins.seal.store import SealStore
from tests.builders import issue, rule_and_clause
from tests.conftest import REC, SEC, Admin

# --- seals (I.4) ------------------------------------------------------------------------------------


async def test_seal_in_force_at_once_then_unsealed_i4(admin: Admin) -> None:
    store = admin.client.app[GATEWAY].store
    body = {
        "patient": "Patient/p-42",
        "reason": "media report",
        "case_ref": "YQ-2026-03",
        "authorised": ["u-doc-1"],
    }
    status, sealed = await admin.post("/admin/seals", REC, body)
    assert status == 201, sealed
    assert sealed["patient"] == "Patient/p-42" and sealed["sealed_by"] == "u-rec-001"
    # The very next request's lookup sees it: no cache between the admin call and the pipeline.
    active = await SealStore(store).active_seals(["Patient/p-42", "Patient/p-43"])
    assert list(active) == ["Patient/p-42"] and active["Patient/p-42"]["authorised"] == ["u-doc-1"]
    record = admin.last_audit()
    assert record["extra"]["admin"]["action"] == "admin.seal"
    assert record["patients_targeted"] == ["Patient/p-42"]
    assert record["extra"]["admin"]["target"]["case_ref"] == "YQ-2026-03"

    status, again = await admin.post("/admin/seals", SEC, {**body, "case_ref": "YQ-2026-04"})
    assert status == 409 and rule_and_clause(again) == ("admin.conflict", "I.4")
    assert "already sealed" in issue(again)["details"]["text"]

    status, listed = await admin.get("/admin/seals", REC, patient="Patient/p-42")
    assert [s["id"] for s in listed["seals"]] == [sealed["id"]]
    status, listed = await admin.get("/admin/seals", REC)
    assert [s["id"] for s in listed["seals"]] == [sealed["id"]]

    status, lifted = await admin.post(
        "/admin/seals/unseal", REC, {"patient": "Patient/p-42", "reason": "closed"}
    )
    assert status == 200 and lifted["unsealed_by"] == "u-rec-001" and lifted["unseal_reason"] == "closed"
    assert await SealStore(store).active_seals(["Patient/p-42"]) == {}
    assert admin.last_audit()["extra"]["admin"]["action"] == "admin.unseal"
    status, body404 = await admin.post("/admin/seals/unseal", REC, {"patient": "Patient/p-42", "reason": "x"})
    assert status == 404 and "not sealed" in issue(body404)["details"]["text"]

    status, resealed = await admin.post("/admin/seals", SEC, {**body, "authorised": []})
    assert status == 201
    status, history = await admin.get("/admin/seals/history", REC, patient="Patient/p-42")
    assert [s["id"] for s in history["seals"]] == [resealed["id"], sealed["id"]]
    status, listed = await admin.get("/admin/seals", REC, patient="Patient/other")
    assert listed["seals"] == []

    # Every call above is findable under the patient (II.2).
    trail = await store.audit_records(patient="Patient/p-42", limit=100)
    actions = [r["extra"]["admin"]["action"] for r in reversed(trail)]
    assert actions == [
        "admin.seal",
        "admin.seal",
        "admin.seals.list",
        "admin.unseal",
        "admin.unseal",
        "admin.seal",
        "admin.seals.history",
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "r", "case_ref": "c"}, "patient"),
        ({"patient": "p-1", "reason": "r", "case_ref": "c"}, "patient"),
        ({"patient": "Observation/1", "reason": "r", "case_ref": "c"}, "patient"),
        ({"patient": "Patient/../x", "reason": "r", "case_ref": "c"}, "patient"),
        ({"patient": "Patient/p1", "case_ref": "c"}, "reason"),
        ({"patient": "Patient/p1", "reason": "r"}, "case_ref"),
        ({"patient": "Patient/p1", "reason": "r", "case_ref": "c", "authorised": "u-1"}, "authorised"),
        ({"patient": "Patient/p1", "reason": "r", "case_ref": "c", "until": "x"}, "until"),
    ],
)
async def test_invalid_seal_is_400_naming_the_field(admin: Admin, body: dict[str, Any], field: str) -> None:
    status, outcome = await admin.post("/admin/seals", REC, body)
    assert status == 400 and issue(outcome)["expression"] == [field]
    assert rule_and_clause(outcome) == ("admin.invalid", "I.4")
    assert await SealStore(admin.client.app[GATEWAY].store).seal_history() == []


async def test_concurrent_seal_requests_one_wins(admin: Admin) -> None:
    body = {"patient": "Patient/busy", "reason": "r", "case_ref": "c"}
    results = await asyncio.gather(*(admin.post("/admin/seals", REC, body) for _ in range(8)))
    assert sorted(s for s, _ in results) == [201] + [409] * 7
    assert len(admin.audit()) == 8
