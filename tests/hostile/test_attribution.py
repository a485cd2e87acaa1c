"""Hostile insiders against both real upstreams: records whose patient is hidden in a shape the
gateway once did not read (issue "nothing leaks", classes 1-3). A leak is judged by content: the
name and national id of the patient must appear nowhere in what a care-bound clinician receives."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import auth, read_audit
from tests.gateway.fhir.test_attribution import NATIONAL_ID, discharge_summary, observation, person
from tests.hostile.conftest import stored

pytestmark = pytest.mark.integration
NAME = "洪玉英"


def leaked(answer: Any) -> bool:
    text = json.dumps(answer, ensure_ascii=False)
    return NAME in text or NATIONAL_ID["value"] in text


async def get(client: Any, path: str, token: str, purpose: str = "TREAT") -> tuple[int, Any, dict[str, Any]]:
    resp = await client.get(path, headers=auth(token, purpose))
    body = await resp.json(content_type=None)
    record = read_audit(client.settings)[-1]
    assert record["request_id"] == resp.headers["X-Request-Id"]  # every attempt has its record
    return resp.status, body, record


async def test_a_stored_document_is_nobodys_a_care_bound_clinician_may_read(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    doc = await stored(fhir_server, discharge_summary())
    # Everyone in the patient's (unknown) care: a nurse and a physician of every department seeded.
    for dept in sorted(set(fhir_server.departments.values())):
        for role in ("nurse", "physician"):
            token = idp.token(role, sub=f"{role}-{dept}", dept=dept)
            status, body, record = await get(client, f"/fhir/Bundle/{doc['id']}", token)
            assert status == 404 and not leaked(body), (role, dept)  # as if no such record
            assert record["patients_disclosed"] == []
            status, body, record = await get(client, "/fhir/Bundle?type=document&_count=200", token)
            assert status == 200 and not leaked(body), (role, dept)
    # A hospital-wide role (records office, for hospital operations) reads it, audited under the
    # unresolved patient so that it can be found.
    status, body, record = await get(client, f"/fhir/Bundle/{doc['id']}", idp.token("records_officer"))
    assert status == 200 and leaked(body)
    # ... and under the patient its embedded copy names (an id the gateway cannot vouch for: both).
    assert set(record["patients_disclosed"]) >= {"Patient/unresolved-reference"}


@pytest.mark.parametrize(
    "shape",
    ["contained", "display", "identifier"],
)
async def test_a_record_whose_subject_hides_its_patient_is_withheld(
    client: Any, idp: Any, fhir_server: Any, shape: str
) -> None:
    subjects = {
        "contained": {"reference": "#p", "display": NAME},
        "display": {"display": f"{NAME} {NATIONAL_ID['value']}"},
        "identifier": {"identifier": NATIONAL_ID, "display": NAME},
    }
    extra = {"contained": [person("p")]} if shape == "contained" else {}
    obs = await stored(fhir_server, observation(subjects[shape], **extra))
    for dept in sorted(set(fhir_server.departments.values())):
        token = idp.token("nurse", sub=f"nurse-{dept}", dept=dept)
        status, body, _ = await get(client, f"/fhir/Observation/{obs['id']}", token)
        assert status == 404 and not leaked(body), (shape, dept)
