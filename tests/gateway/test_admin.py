"""The admin API's common path on a real app: roles per endpoint from the config, 401/404 audited,
one audit record per call, no audit no answer (II.1, II.2).

Real parts: the aiohttp app from create_app, a SQLite file, tokens signed by the test identity
provider whose JWKS is served over HTTP. No FHIR server: the upstream is an unreachable address,
which the admin routes never touch.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.app import create_app
from gateway.runtime import GATEWAY
from plugins.grants.store import GrantStore
from plugins.seal.store import SealStore
from tests.builders import issue, rotation, rule_and_clause
from tests.conftest import NURSE, REC, SEC, UNREACHABLE, Admin, available_plugins

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


async def test_head_of_a_read_endpoint_is_that_endpoint(admin: Admin) -> None:
    """HEAD is GET without a body (HTTP): audited as the same action, not as an unknown path."""
    for path, action in (("/admin/grants", "admin.grants.list"), ("/admin/audit", "admin.audit.search")):
        resp = await admin.client.head(path, headers=admin.headers(SEC))
        assert resp.status == 200 and resp.headers["X-Request-Id"]
        assert admin.last_audit()["extra"]["admin"]["action"] == action
