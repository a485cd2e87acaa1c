"""/admin/grants on a real app (II.1): created, read, listed, revoked; bad fields named; no self-grants."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.runtime import GATEWAY
from plugins.grants.store import GrantStore
from tests.builders import issue, rotation, rule_and_clause, vendor
from tests.conftest import REC, SEC, Admin

# --- grants (II.1) ----------------------------------------------------------------------------------


async def test_grant_created_read_listed_and_revoked_ii1(admin: Admin) -> None:
    status, created = await admin.post("/admin/grants", SEC, rotation())
    assert status == 201, created
    assert created["created_by"] == "u-sec-001" and created["revoked_at"] is None
    # A rotation can never outlast itself: the end is stored exactly as given.
    assert (created["start"], created["end"]) == ("2026-03-01T00:00:00Z", "2026-03-31T23:59:59Z")
    assert created["purposes"] == ["TRAIN", "TREAT"]
    record = admin.last_audit()
    assert record["interaction"] == "admin" and record["decision"] == "allow" and record["status"] == 201
    assert record["extra"]["admin"]["action"] == "admin.grant.create"
    assert record["extra"]["admin"]["outcome"] == "done"
    assert record["extra"]["admin"]["target"]["grant_id"] == created["id"]
    assert record["extra"]["admin"]["target"]["grant_operator"] == "u-student-001"

    status, v = await admin.post("/admin/grants", REC, vendor())
    assert status == 201 and v["agreement"] == "AG-2026-017" and v["supervisor"] == "u-it-001"
    assert v["scope"]["fields"] == {"Observation": ["code", "value"]}

    status, got = await admin.get(f"/admin/grants/{created['id']}", SEC)
    assert status == 200 and got == created
    status, listed = await admin.get("/admin/grants", SEC)
    assert {g["id"] for g in listed["grants"]} == {created["id"], v["id"]}
    status, listed = await admin.get("/admin/grants", SEC, operator="u-student-001")
    assert [g["id"] for g in listed["grants"]] == [created["id"]]

    status, revoked = await admin.post(
        f"/admin/grants/{created['id']}/revoke", SEC, {"reason": "rotation ended early"}
    )
    assert status == 200 and revoked["revoked_by"] == "u-sec-001"
    assert revoked["revoke_reason"] == "rotation ended early"
    assert admin.last_audit()["extra"]["admin"]["action"] == "admin.grant.revoke"
    # The gateway's per-request lookup no longer sees it.
    assert await GrantStore(admin.client.app[GATEWAY].store).grants_for("u-student-001") == []
    status, listed = await admin.get("/admin/grants", SEC, operator="u-student-001")
    assert listed["grants"] == []
    status, listed = await admin.get("/admin/grants", SEC, operator="u-student-001", include_revoked="true")
    assert [g["id"] for g in listed["grants"]] == [created["id"]]

    status, body = await admin.post(f"/admin/grants/{created['id']}/revoke", SEC, {"reason": "again"})
    assert status == 409 and rule_and_clause(body) == ("admin.conflict", "II.1")
    assert admin.last_audit()["extra"]["admin"]["outcome"] == "conflict"
    status, body = await admin.post(f"/admin/grants/{'0' * 32}/revoke", SEC, {"reason": "x"})
    assert status == 404 and rule_and_clause(body) == ("admin.not-found", "II.1")
    status, body = await admin.get("/admin/grants/not-a-grant-id", SEC)
    assert status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (rotation(kind="holiday"), "kind"),
        ({k: v for k, v in rotation().items() if k != "operator"}, "operator"),
        (rotation(operator=""), "operator"),
        (rotation(dept=None), "dept"),  # II.1: a trainee is bound to the rotation's department
        (rotation(purposes=[]), "purposes"),
        (rotation(purposes="TREAT"), "purposes"),
        (rotation(purposes=[1]), "purposes"),
        (rotation(start="2026-03-01"), "start"),
        (rotation(start="2026-03-01T08:00:00+08:00"), "start"),  # UTC with Z only
        (rotation(end="2026-02-30T00:00:00Z"), "end"),
        (rotation(end="2026-03-01T00:00:00Z"), "end"),  # start < end
        (rotation(end="2026-02-01T00:00:00Z"), "end"),
        (rotation(scope=[]), "scope"),
        (rotation(scope={"types": ["Bogus"]}), "scope.types"),
        (rotation(scope={"interactions": ["steal"]}), "scope.interactions"),
        (rotation(scope={"types": ["Observation"], "fields": {"Patient": ["name"]}}), "scope.fields.Patient"),
        (rotation(scope={"everything": True}), "scope.everything"),
        (rotation(ends="2027-01-01T00:00:00Z"), "ends"),  # a misspelt field is not ignored
        (vendor(agreement=None), "agreement"),
        (vendor(supervisor=""), "supervisor"),
        (vendor(scope={"types": ["Observation"]}), "scope.interactions"),
        (vendor(scope={"interactions": ["read"]}), "scope.types"),
    ],
)
async def test_invalid_grant_is_400_naming_the_field(admin: Admin, body: dict[str, Any], field: str) -> None:
    status, outcome = await admin.post("/admin/grants", SEC, body)
    assert status == 400, outcome
    assert issue(outcome)["expression"] == [field]
    assert rule_and_clause(outcome) == ("admin.invalid", "II.1")
    text = issue(outcome)["details"]["text"]
    assert field.split(".")[-1] in text and " / " in text  # zh / en
    assert await GrantStore(admin.client.app[GATEWAY].store).list_grants(include_revoked=True) == []
    record = admin.last_audit()
    assert record["status"] == 400 and record["extra"]["admin"]["outcome"] == "invalid"


async def test_grant_body_must_be_json(admin: Admin) -> None:
    headers = admin.headers(SEC)
    resp = await admin.client.post("/admin/grants", data="kind=rotation", headers=headers)
    assert resp.status == 415
    resp = await admin.client.post(
        "/admin/grants", data=b"{not json", headers={**headers, "Content-Type": "application/json"}
    )
    assert resp.status == 400 and issue(await resp.json())["details"]["text"]
    status, _ = await admin.get("/admin/grants", SEC, include_revoked="maybe")
    assert status == 400
    assert [r["status"] for r in admin.audit()] == [415, 400, 400]


async def test_nobody_grants_themselves(admin: Admin) -> None:
    """II.1: permissions are given by the institution; a records officer cannot grant himself export."""
    body = {
        "kind": "export",
        "operator": "u-rec-001",
        "purposes": ["HOPERAT"],
        "start": "2026-01-01T00:00:00Z",
        "end": "2036-01-01T00:00:00Z",
        "scope": {"types": ["Patient"]},
    }
    status, out = await admin.post("/admin/grants", REC, body)
    assert status == 403 and out["issue"][0]["details"]["coding"][0]["code"] == "grant.self"
