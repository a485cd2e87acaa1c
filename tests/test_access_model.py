"""The notice's access model through the gateway, against the real FHIR server, with both engines:
purposes (I.2), grades and least privilege (I.4), the care relationship (I.4), time-bound grants
(II.1), break-the-glass, sealing 封存 (I.4), side channels — the "done when" of the access model.

Patients are made per test with explicit departments (an Encounter's serviceType), so each test
reads as its own story.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app
from gateway.fhir.pseudonyms import Pseudonymiser
from gateway.runtime import GATEWAY
from plugins.care.hook import DEPARTMENT_SYSTEM
from plugins.grants.store import GrantStore
from plugins.seal.store import SealStore
from tests.conftest import auth, read_audit

pytestmark = pytest.mark.integration

ICD10 = "http://hl7.org/fhir/sid/icd-10"
V = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}
HIV_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}


class Story:
    def __init__(self, client: Any, settings: Any, fhir: Any, idp: Any) -> None:
        self.client, self.settings, self.fhir, self.idp = client, settings, fhir, idp

    @property
    def store(self) -> Any:
        return self.client.server.app[GATEWAY].store

    async def get(
        self, path: str, roles: str, sub: str, dept: str = "", purpose: str | None = "TREAT", **headers: str
    ) -> tuple[int, Any]:
        token = self.idp.token(roles, sub=sub, dept=dept)
        resp = await self.client.get(path, headers=auth(token, purpose, **headers))
        return resp.status, await resp.json(content_type=None)

    async def post(
        self, path: str, body: Any, roles: str, sub: str, dept: str = "", purpose: str = "TREAT"
    ) -> tuple[int, Any]:
        token = self.idp.token(roles, sub=sub, dept=dept)
        resp = await self.client.post(
            path,
            data=json.dumps(body),
            headers={**auth(token, purpose), "Content-Type": "application/fhir+json"},
        )
        return resp.status, await resp.json(content_type=None)

    async def patient(
        self, dept: str, *conditions: dict[str, Any], name: str = "王伟", family: str = ""
    ) -> dict[str, str]:
        """A patient treated in `dept`, with the given Conditions; returns ids."""
        p = f"urn:uuid:{uuid.uuid4()}"
        entries = [
            {
                "fullUrl": p,
                "request": {"method": "POST", "url": "Patient"},
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": name[0], "given": [name[1:]], "text": name}],
                    "birthDate": "1961-07-14",
                    "telecom": [{"system": "phone", "value": "13900000000"}],
                    "identifier": [
                        {"system": "urn:oid:2.16.156.emrguard.mrn", "value": f"MRN-{uuid.uuid4().hex[:6]}"}
                    ],
                    "text": {
                        "status": "generated",
                        "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{name}</div>',
                    },
                },
            },
            {
                "request": {"method": "POST", "url": "Encounter"},
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": p},
                    "serviceType": {"coding": [{"system": DEPARTMENT_SYSTEM, "code": dept}]},
                },
            },
        ]
        for c in conditions:
            entries.append(
                {
                    "request": {"method": "POST", "url": "Condition"},
                    "resource": {
                        "resourceType": "Condition",
                        "subject": {"reference": p, "display": name},
                        **c,
                    },
                }
            )
        async with aiohttp.ClientSession() as s:
            async with s.post(
                self.fhir.base, json={"resourceType": "Bundle", "type": "transaction", "entry": entries}
            ) as r:
                assert r.status == 200, await r.text()
                out = await r.json(content_type=None)
        ids = [e["response"]["location"].split("/_history")[0] for e in out["entry"]]
        return {"patient": ids[0], "encounter": ids[1], "conditions": ids[2:], "name": name}


@pytest.fixture(params=["embedded", "opa"])
async def story(
    request: pytest.FixtureRequest, aiohttp_client: Any, make_settings: Any, fhir_server: Any, idp: Any
) -> Story:
    opa_url = request.getfixturevalue("opa_server").url if request.param == "opa" else ""
    settings = make_settings(fhir_server.base, request.param, opa_url)
    client = await aiohttp_client(create_app(settings))
    return Story(client, settings, fhir_server, idp)


def rules(body: dict[str, Any]) -> set[str]:
    return {
        c["code"]
        for i in body.get("issue", [])
        for c in i["details"]["coding"]
        if c["system"].endswith("/rule")
    }


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- care relationship (I.4) ------------------------------------------------------------------------


async def test_nurse_reads_own_department_patient_not_another(story: Story) -> None:
    cardio = await story.patient("cardiology")
    psych = await story.patient("psychiatry")
    status, body = await story.get(f"/fhir/{cardio['patient']}", "nurse", "nurse-zhao", "cardiology")
    assert status == 200 and body["resourceType"] == "Patient"
    status, body = await story.get(f"/fhir/{psych['patient']}", "nurse", "nurse-zhao", "cardiology")
    assert status == 403 and "care.no-relationship" in rules(body)
    status, _ = await story.get(
        f"/fhir/Condition?subject={psych['patient']}", "nurse", "nurse-zhao", "cardiology"
    )
    assert status == 403


async def test_search_across_patients_returns_only_related(story: Story) -> None:
    family = f"测{uuid.uuid4().hex[:4]}"
    cardio = await story.patient("cardiology", name="甲" + family, family=family)
    psych = await story.patient("psychiatry", name="乙" + family, family=family)
    status, body = await story.get(f"/fhir/Patient?name={family}", "nurse", "nurse-zhao", "cardiology")
    assert status == 200
    ids = {f"Patient/{e['resource']['id']}" for e in body.get("entry", [])}
    assert cardio["patient"] in ids and psych["patient"] not in ids


# --- grades (I.4) -----------------------------------------------------------------------------------


async def test_grade5_hiv_condition_absent_for_grade4_role_others_remain(story: Story) -> None:
    p = await story.patient(
        "infectious_disease",
        {"code": {"coding": [{"system": ICD10, "code": "B20"}]}, "meta": {"security": [V, HIV_LABEL]}},
        {"code": {"coding": [{"system": ICD10, "code": "J45"}], "text": "asthma"}},
    )
    status, body = await story.get(
        f"/fhir/Condition?subject={p['patient']}", "nurse", "nurse-li", "infectious_disease"
    )
    assert status == 200
    codes = [c["code"] for e in body["entry"] for c in e["resource"]["code"].get("coding", [])]
    assert "J45" in codes and "B20" not in codes
    record = read_audit(story.settings)[-1]
    assert record["entries_dropped"] == 1
    assert 5 in record["grades"].values() and record["max_grade_disclosed"] < 5
    # A physician of the department, capped at 5 for treatment, sees both.
    _, body = await story.get(
        f"/fhir/Condition?subject={p['patient']}", "physician", "dr-zhou", "infectious_disease"
    )
    assert {c["code"] for e in body["entry"] for c in e["resource"]["code"]["coding"]} == {"B20", "J45"}


async def test_has_probing_for_hiv_is_refused(story: Story) -> None:
    # By a code through _has: the policy could not grade it, so the gateway refuses it up front.
    status, body = await story.get(
        "/fhir/Patient?_has:Condition:patient:code=B20", "nurse", "nurse-li", "infectious_disease"
    )
    assert status == 400 and "fhir.search-chain-not-served" in rules(body)
    # Any other _has matches on records the nurse may not see: the policy refuses it below grade 5.
    status, body = await story.get(
        "/fhir/Patient?_has:Condition:patient:recorded-date=ge2000-01-01",
        "nurse",
        "nurse-li",
        "infectious_disease",
    )
    assert status == 403 and "search.side-channel" in rules(body)


# --- purposes and trainees (I.2, II.1) ---------------------------------------------------------------


async def test_student_rotation_deidentified_and_ends_to_the_second(story: Story) -> None:
    p = await story.patient("cardiology", {"code": {"text": "hypertension"}})
    now = datetime.now(UTC)
    end = (now + timedelta(seconds=3)).replace(microsecond=0)
    await GrantStore(story.store).create_grant(
        {
            "kind": "rotation",
            "operator": "stu-001",
            "dept": "cardiology",
            "purposes": ["TRAIN"],
            "start": iso(now - timedelta(days=1)),
            "end": iso(end),
            "scope": {},
        },
        by="rec-chen",
    )
    status, body = await story.get(f"/fhir/{p['patient']}", "student", "stu-001", "", purpose="TRAIN")
    assert status == 200
    text = json.dumps(body, ensure_ascii=False)
    assert p["name"] not in text and "13900000000" not in text and "MRN-" not in text
    assert body["birthDate"] == "1961"
    status, body = await story.get(
        f"/fhir/Condition?subject={p['patient']}", "student", "stu-001", "", purpose="TRAIN"
    )
    assert status == 200 and p["name"] not in json.dumps(body, ensure_ascii=False)  # no Reference.display
    status, _ = await story.get(f"/fhir/{p['patient']}", "student", "stu-001", "", purpose="TREAT")
    assert status == 403  # a student only ever claims TRAIN (I.2)
    await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 0.05)
    status, body = await story.get(f"/fhir/{p['patient']}", "student", "stu-001", "", purpose="TRAIN")
    assert status == 403 and "grant.no-rotation" in rules(body)


async def test_researcher_sees_pseudonyms_never_real_ids(story: Story) -> None:
    p = await story.patient("oncology", {"code": {"text": "lung cancer"}})
    real_id = p["patient"].split("/")[1]
    # A researcher names patients only by their pseudonyms (I.4): a real id would link the person.
    status, body = await story.get(
        f"/fhir/Condition?subject={p['patient']}", "researcher", "res-sun", "", purpose="HRESCH"
    )
    assert status == 403 and "pseudonym.real-id" in rules(body)
    # Her pseudonym of the patient (no study grant: her own key), read through the gateway.
    pseudonym = Pseudonymiser(story.settings.pseudonym_secret).for_study("operator:res-sun")(
        "Patient", real_id
    )
    status, body = await story.get(
        f"/fhir/Condition?subject=Patient/{pseudonym}", "researcher", "res-sun", "", purpose="HRESCH"
    )
    assert status == 200 and body["entry"]
    refs = {e["resource"]["subject"]["reference"] for e in body["entry"]}
    assert refs == {f"Patient/{pseudonym}"}
    assert all(e["resource"]["id"].startswith("ps-") for e in body["entry"])
    assert real_id not in json.dumps(body)  # links too: they echo her query as she sent it
    # Stable: the same pseudonyms on the next request.
    _, again = await story.get(
        f"/fhir/Condition?subject=Patient/{pseudonym}", "researcher", "res-sun", "", purpose="HRESCH"
    )
    assert [e["resource"]["id"] for e in again["entry"]] == [e["resource"]["id"] for e in body["entry"]]
    # The audit names the real patient (II.2).
    assert read_audit(story.settings)[-1]["patients_disclosed"] == [p["patient"]]


# --- break-the-glass ----------------------------------------------------------------------------------


async def test_break_glass_with_reason_and_not_without(story: Story) -> None:
    p = await story.patient("psychiatry")
    status, body = await story.get(
        f"/fhir/{p['patient']}", "physician", "dr-er", "emergency", purpose="ETREAT"
    )
    assert status == 403 and "care.no-relationship" in rules(body)
    status, body = await story.get(
        f"/fhir/{p['patient']}",
        "physician",
        "dr-er",
        "emergency",
        purpose="ETREAT",
        **{"X-Break-Glass-Reason": "unconscious, suspected overdose"},
    )
    assert status == 200
    record = read_audit(story.settings)[-1]
    assert record["extra"]["break_glass_reason"] == "unconscious, suspected overdose"
    assert record["alerts"] == ["break-glass"]  # one alert per event per request (II.3 counts)
    alerts = [a for a in await story.store.list_alerts() if a["request_id"] == record["request_id"]]
    assert [(a["event"], a["operator"]) for a in alerts] == [("break-glass", "dr-er")]


# --- sealing 封存 (I.4) ----------------------------------------------------------------------------------


async def test_sealed_patient_refused_by_every_route_except_named_personnel(story: Story) -> None:
    p = await story.patient("cardiology", {"code": {"text": "complication"}})
    pid, cond = p["patient"], p["conditions"][0]
    # Before the seal the department's nurse reads the record.
    assert (await story.get(f"/fhir/{pid}", "nurse", "nurse-zhao", "cardiology"))[0] == 200
    await SealStore(story.store).seal_patient(pid, "media event", "舆情-2026-031", ["dr-wang"], by="rec-chen")
    routes = [
        f"/fhir/{pid}",
        f"/fhir/{cond}",
        f"/fhir/Condition?subject={pid}",
        f"/fhir/{pid}/_history",
        f"/fhir/{pid}/$everything",
        f"/fhir/{pid}/Condition",
    ]
    for route in routes:  # the very next request after the seal call
        status, body = await story.get(route, "nurse", "nurse-zhao", "cardiology")
        if route == f"/fhir/{cond}":  # names no patient: refused like an id that does not exist
            assert status == 404 and rules(body) == {"fhir.not-available"}, route
            assert "seal.sealed" in json.dumps(read_audit(story.settings)[-1]["reasons"]), route
            continue
        assert status == 403, route
        assert "seal.sealed" in rules(body), route
    # Reached from a search that does not name the patient: the entries are withheld.
    status, body = await story.get(
        "/fhir/Condition?code:text=complication", "physician", "dr-li", "cardiology"
    )
    assert cond.split("/")[1] not in json.dumps(body)
    # A batch entry and a write.
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": pid}}]}
    status, body = await story.post("/fhir", batch, "physician", "dr-li", "cardiology")
    assert status == 403 or body["entry"][0]["response"]["status"].startswith("403")
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "bp"},
        "subject": {"reference": pid},
    }
    assert (await story.post("/fhir/Observation", obs, "nurse", "nurse-zhao", "cardiology"))[0] == 403
    # The named physician keeps access, audited and alerted.
    status, _ = await story.get(f"/fhir/{pid}", "physician", "dr-wang", "cardiology")
    assert status == 200
    events = [a["event"] for a in await story.store.list_alerts()]
    assert "seal-access-denied" in events and "seal-access" in events
    # Break-the-glass never opens a sealed record.
    status, body = await story.get(
        f"/fhir/{pid}",
        "physician",
        "dr-er",
        "emergency",
        purpose="ETREAT",
        **{"X-Break-Glass-Reason": "arrest"},
    )
    assert status == 403 and "seal.sealed" in rules(body)


# --- explain (for security teams) ----------------------------------------------------------------


async def test_policy_explain_says_why_without_touching_the_upstream(story: Story) -> None:
    token = story.idp.token("security_officer", sub="sec-wang")
    body = {
        "operator": {"id": "nurse-zhao", "roles": ["nurse"], "dept": "cardiology"},
        "purpose": "TREAT",
        "request": {"method": "GET", "url": "Condition?subject=Patient/nowhere-1"},
        "patients": {"Patient/nowhere-1": {"departments": ["psychiatry"]}},
    }
    resp = await story.client.post(
        "/admin/policy/explain", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    out = await resp.json()
    assert out["decision"]["allow"] is False and "care.no-relationship" in out["rules_fired"]
    assert out["input"]["patients"]["Patient/nowhere-1"]["departments"] == ["psychiatry"]
    # Explaining about a patient is as traceable as reading the record (II.2).
    assert "Patient/nowhere-1" in read_audit(story.settings)[-1]["patients_targeted"]
    nurse = story.idp.token("nurse", sub="nurse-zhao", dept="cardiology")
    assert (
        await story.client.post(
            "/admin/policy/explain", json=body, headers={"Authorization": f"Bearer {nurse}"}
        )
    ).status == 403


# --- vendors (II.1) -------------------------------------------------------------------------------


async def test_vendor_sees_only_the_fields_its_agreement_names(story: Story) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{story.fhir.base}/Device",
            json={
                "resourceType": "Device",
                "status": "active",
                "manufacturer": "Mindray",
                "serialNumber": "SN-1",
                "note": [{"text": "bed 12, patient 王伟"}],
            },
        ) as r:
            device = await r.json(content_type=None)
    now = datetime.now(UTC)
    await GrantStore(story.store).create_grant(
        {
            "kind": "vendor",
            "operator": "ven-mindray",
            "purposes": ["HOPERAT"],
            "start": iso(now - timedelta(days=1)),
            "end": iso(now + timedelta(days=30)),
            "agreement": "VA-2026-07",
            "supervisor": "sec-wang",
            "scope": {
                "types": ["Device"],
                "fields": {"Device": ["status", "manufacturer"]},
                "interactions": ["read"],
            },
        },
        by="sec-wang",
    )
    status, body = await story.get(f"/fhir/Device/{device['id']}", "vendor", "ven-mindray", purpose="HOPERAT")
    assert status == 200
    assert set(body) - {"meta"} == {"resourceType", "id", "status", "manufacturer"}
    assert "王伟" not in json.dumps(body, ensure_ascii=False)
    # Outside the agreement's scope: another type, or without an agreement at all.
    status, body = await story.get("/fhir/Patient?_count=1", "vendor", "ven-mindray", purpose="HOPERAT")
    assert status == 403
    status, body = await story.get(f"/fhir/Device/{device['id']}", "vendor", "ven-other", purpose="HOPERAT")
    assert status == 403 and "grant.no-agreement" in rules(body)


async def test_seal_and_care_hold_by_every_link_not_only_subject(story: Story) -> None:
    """A patient linked through Observation.focus or Appointment.participant is still that patient
    (security review: these routes leaked a sealed patient's data)."""
    p = await story.patient("cardiology")
    pid = p["patient"]
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{story.fhir.base}/Observation",
            json={
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"focus-{pid}"},
                "focus": [{"reference": pid}],
            },
        ) as r:
            focused = await r.json(content_type=None)
        async with s.post(
            f"{story.fhir.base}/Appointment",
            json={
                "resourceType": "Appointment",
                "status": "proposed",
                "participant": [{"actor": {"reference": pid}, "status": "accepted"}],
            },
        ) as r:
            appt = await r.json(content_type=None)
    # An unrelated nurse (dermatology) reaches none of it, by any route.
    for route in (
        f"/fhir/Observation/{focused['id']}",
        f"/fhir/Appointment/{appt['id']}",
        f"/fhir/Appointment?actor={pid}",
        f"/fhir/Observation?focus={pid}",
    ):
        status, _ = await story.get(route, "nurse", "nurse-derm", "dermatology")
        # A read by id names no patient: refused like an id that does not exist (no existence oracle).
        assert status == (404 if "?" not in route else 403), route
    await SealStore(story.store).seal_patient(pid, "media event", "舆情-2026-032", [], by="rec-chen")
    status, body = await story.get(f"/fhir/Appointment/{appt['id']}", "nurse", "nurse-zhao", "cardiology")
    assert status == 404 and rules(body) == {"fhir.not-available"}
    assert "seal.sealed" in json.dumps(read_audit(story.settings)[-1]["reasons"])


async def test_emergency_purpose_without_reason_is_no_way_round_the_grade_cap(story: Story) -> None:
    """Security review: a nurse switching to ETREAT (cap 5) with no reason saw an HIV diagnosis
    hidden under TREAT (cap 4). An emergency purpose now needs a stated, audited, alerted reason."""
    p = await story.patient(
        "infectious_disease",
        {"code": {"coding": [{"system": ICD10, "code": "B20"}]}, "meta": {"security": [V, HIV_LABEL]}},
    )
    status, body = await story.get(
        f"/fhir/Condition?subject={p['patient']}", "nurse", "nurse-li", "infectious_disease", purpose="ETREAT"
    )
    assert status == 403 and "purpose.reason-required" in rules(body)


@pytest.mark.parametrize(
    "condition",
    [
        {"code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "B20"}]}},
        {"code": {"coding": [{"system": "urn:oid:2.16.156.10011.2.3.3.11", "code": "B20.001"}]}},
        {"code": {"coding": [{"system": "http://snomed.info/sct", "code": "86406008"}]}},
        {
            "code": {"text": "follow-up"},
            "evidence": [{"code": [{"coding": [{"system": ICD10, "code": "F11.2"}]}]}],
        },
    ],
)
async def test_sensitive_codes_graded_in_any_system_and_element(story: Story, condition: dict) -> None:
    """Security review #4: HIV under ICD-10-CM, the national code set, SNOMED, or in evidence.code."""
    p = await story.patient("cardiology", condition)
    status, body = await story.get(
        f"/fhir/Condition?subject={p['patient']}", "nurse", "nurse-zhao", "cardiology"
    )
    assert status == 200 and body.get("entry", []) == []


async def test_probing_by_sensitive_code_is_refused(story: Story) -> None:
    """Security review #7: with every B20 match withheld, paging links still told a grade-4 nurse
    whether her patient had one. Searching by a code above one's grade is refused up front."""
    p = await story.patient("cardiology")
    status, body = await story.get(
        f"/fhir/Condition?subject={p['patient']}&code=B20&_count=1", "nurse", "nurse-zhao", "cardiology"
    )
    assert status == 403 and "search.sensitive-code" in rules(body)
