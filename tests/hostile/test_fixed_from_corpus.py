"""Leaks the insider corpus found (tests/hostile/test_insiders.py), each closed here: a researcher's
history naming real patient ids, a display-only subject released to a researcher, and an operation
on another patient's record ($validate) answering with that record's codes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import auth, read_audit
from tests.hostile.conftest import stored

pytestmark = pytest.mark.integration
F32 = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32"}]}


async def answer(client: Any, path: str, token: str, purpose: str) -> tuple[int, str]:
    resp = await client.get(path, headers=auth(token, purpose))
    text = await resp.text()
    assert read_audit(client.settings)[-1]["request_id"] == resp.headers["X-Request-Id"]
    return resp.status, text


async def test_a_researchers_history_names_no_real_patient(client: Any, idp: Any, fhir_server: Any) -> None:
    researcher = idp.token("researcher", sub="res-hist")
    real_ids = [p.split("/", 1)[1] for p in fhir_server.patients]
    for path in ("/fhir/Patient/_history?_count=100", "/fhir/_history?_count=100"):
        status, text = await answer(client, path, researcher, "HRESCH")
        if status == 200:  # (Medplum serves no type history: 404)
            for rid in real_ids:
                assert f"Patient/{rid}/" not in text and f'"Patient/{rid}"' not in text, (path, rid)


async def test_a_display_only_subject_is_not_shown_to_a_researcher(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    name = "洪玉英 MRN000003"
    obs = await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"display": name},
        },
    )
    researcher = idp.token("researcher", sub="res-display")
    for path in (f"/fhir/Observation/{obs['id']}", f"/fhir/Observation?_id={obs['id']}"):
        status, text = await answer(client, path, researcher, "HRESCH")
        assert "洪玉英" not in json.loads(json.dumps(text)) and "MRN000003" not in text, (path, status)


async def test_an_operation_on_a_record_is_judged_by_the_record(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    psych = next(p for p, d in fhir_server.departments.items() if d == "psychiatry")
    cond = await stored(
        fhir_server, {"resourceType": "Condition", "subject": {"reference": psych}, "code": F32}
    )
    doctor = idp.token("physician", sub="dr-validate", dept="cardiology")
    status, text = await answer(client, f"/fhir/Condition/{cond['id']}/$validate", doctor, "TREAT")
    assert status == 404 and "F32" not in text  # as if no such record (no existence oracle)
    # The psychiatry physician's own $validate reaches the server.
    own = idp.token("physician", sub="dr-psy", dept="psychiatry")
    status, _ = await answer(client, f"/fhir/Condition/{cond['id']}/$validate", own, "TREAT")
    assert status != 403 and read_audit(client.settings)[-1]["upstream_status"] is not None
    # Judged, not replaced: the record of an operation claims no version it replaced.
    assert "versions_before" not in read_audit(client.settings)[-1].get("extra", {})
