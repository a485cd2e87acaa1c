"""Audit search and IHE BALP export (II.2 可查询, III): who saw what, when, why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from gateway.audit.search import AuditQuery
from gateway.cli import main
from gateway.runtime import GATEWAY
from plugins.balp.event import to_audit_event
from tests.builders import audit_record as record
from tests.conftest import NURSE, SEC, Admin


async def fill(adm: Admin, n: int) -> Any:
    store = adm.client.server.app[GATEWAY].store
    for i in range(n):
        await store.insert_audit(record(i, decision="deny" if i % 10 == 0 else "allow"))
    return store


async def test_search_by_patient_operator_time_and_decision_pages_newest_first(admin: Admin) -> None:
    store = await fill(admin, 70)
    page = await store.search_audit(AuditQuery(patient="Patient/p3", limit=4))
    ids = [r["request_id"] for r in page["records"]]
    assert ids == ["req-00066", "req-00059", "req-00052", "req-00045"]
    nxt = await store.search_audit(AuditQuery(patient="Patient/p3", limit=4, cursor=page["next_cursor"]))
    assert [r["request_id"] for r in nxt["records"]][0] == "req-00038"
    both = await store.search_audit(AuditQuery(operator="op-2", decision="deny", limit=50))
    assert {r["request_id"] for r in both["records"]} == {"req-00010", "req-00030", "req-00050"}
    window = await store.search_audit(
        AuditQuery(time_from="2026-12-01T08:00:10", time_to="2026-12-01T08:00:12", limit=50)
    )
    assert [r["request_id"] for r in window["records"]] == ["req-00011", "req-00010"]


async def test_admin_audit_search_is_role_bound_and_itself_audited(admin: Admin) -> None:
    await fill(admin, 20)
    status, body = await admin.get("/admin/audit", SEC, patient="Patient/p2", limit="3")
    assert status == 200 and len(body["records"]) == 3 and body["next_cursor"]
    last = admin.last_audit()
    assert last["extra"]["admin"]["action"] == "admin.audit.search" and last["operator"] == "u-sec-001"
    assert last["patients_targeted"] == ["Patient/p2"]  # searching a patient's trail is itself traceable
    status, _ = await admin.get("/admin/audit", NURSE, patient="Patient/p2")
    assert status == 403


async def test_balp_audit_events_validate_as_r4b(admin: Admin) -> None:
    await fill(admin, 3)
    status, event = await admin.get("/admin/audit/req-00001/AuditEvent", SEC)
    assert status == 200
    AuditEvent.model_validate(event)
    assert event["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"
    ]
    assert event["agent"][0]["who"]["identifier"]["value"] == "op-1"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert {"reference": "Patient/p1"} in [e.get("what") for e in event["entity"]]
    status, bundle = await admin.get("/admin/audit/export", SEC, limit="2")
    assert status == 200 and len(bundle["entry"]) == 2 and bundle["link"][0]["relation"] == "next"
    for kind in ("read", "create", "update", "delete", "operation", "transaction"):
        AuditEvent.model_validate(
            to_audit_event(
                record(
                    9,
                    interaction=kind,
                    status=403,
                    reasons=[{"rule": "seal.sealed", "clause": "I.4", "en": "sealed"}],
                )
            )
        )
    assert to_audit_event(record(9, interaction="create"))["action"] == "C"


async def test_cli_search_and_ndjson_export(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    await fill(admin, 12)
    db, none = admin.settings.db, str(Path(admin.settings.db).parent / "archive")  # (no archive yet)
    search = ["audit", "search", "--db", db, "--archive-dir", none, "--operator", "op-2"]
    assert main([*search, "--limit", "2", "--all"]) == 0  # --all: every record, whatever the page size
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["request_id"] for r in lines] == ["req-00010", "req-00006", "req-00002"]
    assert main([*search, "--limit", "2"]) == 0
    assert [json.loads(x)["request_id"] for x in capsys.readouterr().out.splitlines()] == [
        "req-00010",
        "req-00006",
    ]
    assert (
        main(["audit", "search", "--db", db, "--archive-dir", none, "--patient", "Patient/p0", "--balp"]) == 0
    )
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert events and all(e["resourceType"] == "AuditEvent" for e in events)


async def test_search_by_time_reads_the_offset(admin: Admin) -> None:
    """`from=…Z` includes that second; China time (+08:00) is the same instant; no offset is UTC."""
    await fill(admin, 20)
    expected = ["req-00006", "req-00005"]
    for since, until in (
        ("2026-12-01T08:00:05Z", "2026-12-01T08:00:07Z"),
        ("2026-12-01T16:00:05+08:00", "2026-12-01T16:00:07+08:00"),
        ("2026-12-01T08:00:05", "2026-12-01T08:00:07.000+00:00"),
    ):
        status, body = await admin.get("/admin/audit", SEC, **{"from": since, "to": until})
        assert status == 200 and [r["request_id"] for r in body["records"]] == expected, since
    status, body = await admin.get("/admin/audit", SEC, **{"from": "yesterday"})
    assert status == 400 and body["issue"][0]["expression"] == ["from"]
    code = main(
        [
            "audit",
            "search",
            "--db",
            admin.settings.db,
            "--archive-dir",
            str(Path(admin.settings.db).parent / "archive"),
            "--from",
            "2026-12-01T16:00:05+08:00",
            "--to",
            "2026-12-01T16:00:07+08:00",
        ]
    )
    assert code == 0
