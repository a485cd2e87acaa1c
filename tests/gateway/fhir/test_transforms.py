"""Field-level minimum necessary (I.4): the operations the response filter carries out."""

from __future__ import annotations

import json

from fhir.resources.R4B import get_fhir_model_class

from gateway.fhir.filter import apply_verdicts
from gateway.fhir.resources import collect
from gateway.fhir.transforms import apply_transforms, keep_only, mask_required


def observation(patient: str = "Patient/p1") -> dict:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": patient, "display": "王伟", "identifier": {"value": "MRN-1"}},
        "performer": [{"reference": "Practitioner/dr-li", "display": "李医生"}],
        "valueQuantity": {"value": 72},
        "note": [{"text": "stable"}],
    }


def test_keep_only_masks_required_elements_and_stays_valid():
    """A vendor grant naming only `valueQuantity` must still yield a valid Observation."""
    obs = observation()
    keep_only(obs, ["valueQuantity"])
    assert set(obs) == {"resourceType", "id", "valueQuantity"}
    mask_required(obs)
    assert obs["code"]["extension"][0]["valueCode"] == "masked"
    assert obs["_status"]["extension"][0]["valueCode"] == "masked"
    get_fhir_model_class("Observation").model_validate(obs)  # raises if invalid


def test_year_and_reference_displays():
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1955-03-19"}
    apply_transforms(patient, [{"op": "year", "path": "birthDate"}])
    assert patient["birthDate"] == "1955"
    obs = observation()
    apply_transforms(obs, [{"op": "drop_reference_display"}])
    assert "王伟" not in json.dumps(obs, ensure_ascii=False) and "李医生" not in json.dumps(
        obs, ensure_ascii=False
    )


def test_transforms_apply_inside_contained_and_bundles():
    obs = observation()
    obs["contained"] = [
        {"resourceType": "Patient", "id": "c1", "birthDate": "2001-02-03", "name": [{"text": "张三"}]}
    ]
    body = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": obs}]}
    slots = collect(body)
    train = {
        "keep": True,
        "redact": ["name"],
        "transform": [{"op": "year", "path": "birthDate"}, {"op": "drop_reference_display"}],
    }
    apply_verdicts(body, slots, [train, train])
    inner = body["entry"][0]["resource"]["contained"][0]
    assert inner["birthDate"] == "2001" and "name" not in inner
    assert "display" not in body["entry"][0]["resource"]["subject"]
