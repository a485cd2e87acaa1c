"""The admin API on a real app: grants (II.1), seals (I.4), alerts (II.3), every call audited (II.2).

Real parts: the aiohttp app from create_app, a SQLite file, tokens signed by the test identity
provider whose JWKS is served over HTTP. No FHIR server: the upstream is an unreachable address,
which the admin routes never touch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
from typing import Any

import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.runtime import GATEWAY
from plugins.grants.store import GrantStore
from plugins.seal.store import SealStore
from tests.conftest import read_audit

UNREACHABLE = "http://127.0.0.1:9/fhir/R4"
SEC = dict(roles="security_officer", sub="u-sec-001")
REC = dict(roles="records_officer", sub="u-rec-001")
NURSE = dict(roles="nurse", sub="u-nurse-001")


def available_plugins() -> tuple[str, ...]:
    """The configured default plugins, less any not written yet (the admin API needs none)."""
    names = Settings().plugins
    return tuple(n for n in names if importlib.util.find_spec(f"plugins.{n}") is not None)


class Admin:
    def __init__(self, client: Any, settings: Settings, idp: Any) -> None:
        self.client = client
        self.settings = settings
        self.idp = idp

    def headers(self, who: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.idp.token(**who)}"} if who else {}

    async def get(self, path: str, who: dict[str, str] | None, **params: str) -> tuple[int, Any]:
        resp = await self.client.get(path, params=params, headers=self.headers(who))
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["X-Request-Id"]
        return resp.status, await resp.json()

    async def post(self, path: str, who: dict[str, str] | None, body: Any) -> tuple[int, Any]:
        resp = await self.client.post(path, json=body, headers=self.headers(who))
        assert resp.headers["Content-Type"].startswith("application/json")
        return resp.status, await resp.json()

    def audit(self) -> list[dict[str, Any]]:
        return read_audit(self.settings)

    def last_audit(self) -> dict[str, Any]:
        return self.audit()[-1]


@pytest.fixture
async def admin(aiohttp_client: Any, make_settings: Any, idp: Any) -> Admin:
    settings = make_settings(UNREACHABLE, plugins=available_plugins())
    client = await aiohttp_client(create_app(settings))
    return Admin(client, settings, idp)


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


# --- roles and authentication ---------------------------------------------------------------------


async def test_roles_are_checked_per_endpoint(admin: Admin) -> None:
    seal = {"patient": "Patient/p-7", "reason": "r", "case_ref": "c"}
    # A nurse may do none of it (II.1, I.4).
    status, body = await admin.post("/admin/seals", NURSE, seal)
    assert status == 403 and rule_and_clause(body) == ("admin.role", "I.4")
    assert "records_officer" in issue(body)["details"]["text"]
    record = admin.last_audit()
    assert record["decision"] == "deny" and record["operator"] == "u-nurse-001"
    assert record["extra"]["admin"] == {
        "action": "admin.seal",
        "outcome": "refused",
        "target": {"patient": "Patient/p-7"},
    }
    assert record["patients_targeted"] == ["Patient/p-7"]  # the attempt is findable under the patient
    status, body = await admin.post("/admin/grants", NURSE, rotation(operator="u-nurse-001"))
    assert status == 403 and rule_and_clause(body) == ("admin.role", "II.1")
    assert admin.last_audit()["extra"]["admin"]["target"] == {"grant_operator": "u-nurse-001"}
    for path in ("/admin/grants", "/admin/seals", "/admin/seals/history", "/admin/alerts"):
        status, _ = await admin.get(path, NURSE)
        assert status == 403, path
    assert await SealStore(admin.client.app[GATEWAY].store).seal_history() == []
    assert await GrantStore(admin.client.app[GATEWAY].store).list_grants() == []

    # records_officer: seals yes; security_officer: grants yes; an inspector: neither.
    assert (await admin.post("/admin/seals", REC, seal))[0] == 201
    assert (await admin.post("/admin/grants", SEC, rotation()))[0] == 201
    inspector = dict(roles="inspector", sub="u-insp-001")
    assert (await admin.get("/admin/grants", inspector))[0] == 403
    assert (await admin.post("/admin/seals/unseal", inspector, {"patient": "Patient/p-7", "reason": "x"}))[
        0
    ] == 403
    assert (await admin.get("/admin/alerts", REC))[0] == 200
    assert (await admin.get("/admin/alerts", dict(roles="admin", sub="u-admin-1")))[0] == 200
    assert (await admin.get("/admin/seals", dict(roles="admin", sub="u-admin-1")))[0] == 403


async def test_roles_come_from_the_config(aiohttp_client: Any, make_settings: Any, idp: Any) -> None:
    settings = make_settings(UNREACHABLE, plugins=available_plugins(), admin_seal_roles=("medical_affairs",))
    adm = Admin(await aiohttp_client(create_app(settings)), settings, idp)
    seal = {"patient": "Patient/p-8", "reason": "r", "case_ref": "c"}
    assert (await adm.post("/admin/seals", REC, seal))[0] == 403
    assert (await adm.post("/admin/seals", dict(roles="medical_affairs", sub="u-ma-1"), seal))[0] == 201


async def test_no_or_bad_token_is_401_and_audited(admin: Admin, idp: Any) -> None:
    status, body = await admin.get("/admin/grants", None)
    assert status == 401 and rule_and_clause(body) == ("auth.missing-token", "II.1")
    resp = await admin.client.post("/admin/seals", json={"patient": "Patient/p1"})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    expired = idp.token(roles="security_officer", sub="u-sec-001", ttl=-3600)
    resp = await admin.client.get("/admin/alerts", headers={"Authorization": f"Bearer {expired}"})
    assert resp.status == 401 and rule_and_clause(await resp.json())[0] == "auth.expired"
    records = admin.audit()
    assert [r["status"] for r in records] == [401, 401, 401]
    assert all(r["decision"] == "none" and r["operator"] is None for r in records)
    assert [r["extra"]["admin"]["action"] for r in records] == [
        "admin.grants.list",
        "admin.seal",
        "admin.alerts.list",
    ]
    assert all(r["extra"]["admin"]["outcome"] == "unauthenticated" for r in records)
    assert await SealStore(admin.client.app[GATEWAY].store).seal_history() == []


async def test_unknown_admin_paths_are_404_and_audited(admin: Admin) -> None:
    status, body = await admin.get("/admin/nothing-here", SEC)
    assert status == 404 and rule_and_clause(body)[0] == "admin.unknown-endpoint"
    resp = await admin.client.delete("/admin/seals", headers=admin.headers(REC))  # known path, wrong method
    assert resp.status == 404
    assert (await admin.get("/admin/nothing-here", None))[0] == 401
    assert [r["extra"]["admin"]["action"] for r in admin.audit()] == ["admin.unknown"] * 3


# --- alerts (II.3) ----------------------------------------------------------------------------------


async def test_alerts_listed_newest_first(admin: Admin) -> None:
    store = admin.client.app[GATEWAY].store
    for i in range(3):
        await store.insert_alert(
            {
                "event": "bulk-read",
                "severity": "high",
                "operator": "u-nurse-001",
                "patients": [f"Patient/p{i}"],
            }
        )
    status, body = await admin.get("/admin/alerts", SEC, limit="2")
    assert status == 200 and [a["patients"] for a in body["alerts"]] == [["Patient/p2"], ["Patient/p1"]]
    assert (await admin.get("/admin/alerts", SEC, limit="0"))[0] == 400
    assert (await admin.get("/admin/alerts", SEC, limit="x"))[0] == 400
    assert admin.last_audit()["extra"]["admin"]["action"] == "admin.alerts.list"


# --- the audit trail (II.2) ---------------------------------------------------------------------------


async def test_every_admin_call_leaves_one_audit_record(admin: Admin) -> None:
    calls = [
        admin.post("/admin/grants", SEC, rotation()),
        admin.get("/admin/grants", SEC),
        admin.post("/admin/seals", REC, {"patient": "Patient/a1", "reason": "r", "case_ref": "c"}),
        admin.get("/admin/seals", NURSE),
        admin.get("/admin/alerts", None),
    ]
    results = [await c for c in calls]
    records = admin.audit()
    assert len(records) == len(calls)
    assert [r["status"] for r in records] == [s for s, _ in results]
    assert [r["extra"]["admin"]["action"] for r in records] == [
        "admin.grant.create",
        "admin.grants.list",
        "admin.seal",
        "admin.seals.list",
        "admin.alerts.list",
    ]
    assert [r["decision"] for r in records] == ["allow", "allow", "allow", "deny", "none"]
    assert all(r["path"].startswith("/admin/") and r["interaction"] == "admin" for r in records)
    # The durable copy holds the same records.
    with sqlite3.connect(admin.settings.db) as db:
        assert db.execute("SELECT count(*) FROM audit WHERE interaction = 'admin'").fetchone() == (5,)


async def test_no_audit_no_answer_503(admin: Admin) -> None:
    gw = admin.client.app[GATEWAY]

    async def broken(record: dict[str, Any]) -> None:  # stand-in: the audit store fails
        raise sqlite3.OperationalError("disk I/O error")

    gw.store.insert_audit = broken  # type: ignore[method-assign]
    status, body = await admin.post(
        "/admin/seals", REC, {"patient": "Patient/z", "reason": "r", "case_ref": "c"}
    )
    assert status == 503 and rule_and_clause(body) == ("audit.unavailable", "II.2")
    status, body = await admin.get("/admin/grants", SEC)
    assert status == 503 and "grants" not in body


async def test_concurrent_seal_requests_one_wins(admin: Admin) -> None:
    body = {"patient": "Patient/busy", "reason": "r", "case_ref": "c"}
    results = await asyncio.gather(*(admin.post("/admin/seals", REC, body) for _ in range(8)))
    assert sorted(s for s, _ in results) == [201] + [409] * 7
    assert len(admin.audit()) == 8


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
