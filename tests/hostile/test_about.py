"""Resources about other resources (issue "nothing leaks", class 10): a Provenance whose target is a
record withheld from the operator is withheld too, by read, by search and by _revinclude, and a
record about a patient outside the operator's care is refused like that patient's own records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import auth, read_audit
from tests.hostile.conftest import stored

pytestmark = pytest.mark.integration
HIV = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "B20"}]}


def provenance(target: str) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": "2026-12-01T08:00:00Z",
        "agent": [{"who": {"display": "ward system"}}],
    }


async def answer(client: Any, path: str, token: str) -> tuple[int, Any]:
    resp = await client.get(path, headers=auth(token, "TREAT"))
    body = await resp.json(content_type=None)
    assert read_audit(client.settings)[-1]["request_id"] == resp.headers["X-Request-Id"]
    return resp.status, body


async def test_a_provenance_of_a_withheld_record_is_withheld(client: Any, idp: Any, fhir_server: Any) -> None:
    patient = fhir_server.patients[0]
    dept = fhir_server.departments[patient]
    hiv = await stored(
        fhir_server, {"resourceType": "Condition", "subject": {"reference": patient}, "code": HIV}
    )
    prov = await stored(fhir_server, provenance(f"Condition/{hiv['id']}"))
    nurse = idp.token("nurse", sub="n-about", dept=dept)  # grade cap 4 for TREAT: HIV (5) is withheld
    status, body = await answer(client, f"/fhir/Provenance/{prov['id']}", nurse)
    assert status == 404 and hiv["id"] not in json.dumps(body)  # as if no such record
    assert "about.withheld" in json.dumps(read_audit(client.settings)[-1]["reasons"])
    status, body = await answer(client, f"/fhir/Provenance?_id={prov['id']}", nurse)
    assert status == 200 and not body.get("entry") and hiv["id"] not in json.dumps(body)
    # Through the withheld record's _revinclude (HAPI serves it; Medplum ignores it): neither leaves.
    status, body = await answer(
        client, f"/fhir/Condition?subject={patient}&_revinclude=Provenance:target&_count=200", nurse
    )
    assert status == 200 and hiv["id"] not in json.dumps(body) and prov["id"] not in json.dumps(body)
    # A physician of the department may see both: the Provenance is disclosed under the patient.
    doctor = idp.token("physician", sub="dr-about", dept=dept)
    status, body = await answer(client, f"/fhir/Provenance/{prov['id']}", doctor)
    assert status == 200 and body["id"] == prov["id"]
    assert patient in read_audit(client.settings)[-1]["patients_disclosed"]


async def test_a_record_about_another_patients_record_follows_that_patient(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    psych = next(p for p, d in fhir_server.departments.items() if d == "psychiatry")
    cond = await stored(
        fhir_server, {"resourceType": "Condition", "subject": {"reference": psych}, "code": {"text": "z"}}
    )
    prov = await stored(fhir_server, provenance(f"Condition/{cond['id']}"))
    nurse = idp.token("nurse", sub="n-about-2", dept="cardiology")
    status, body = await answer(client, f"/fhir/Provenance/{prov['id']}", nurse)
    assert (
        status == 404 and psych.split("/")[1] not in json.dumps(body) and cond["id"] not in json.dumps(body)
    )
