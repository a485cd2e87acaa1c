"""Unit tests for write-body validation (gateway/fhir/validate.py).

I.3 (governed create/modify workflows): a body that is not valid FHIR never reaches the EMR; the
400 names every element that is wrong so the client can fix it.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.fhir.request import parse_request
from gateway.fhir.validate import MAX_PROBLEMS, validate_write

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"


def observation(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def problems(method: str, path: str, body: Any, content_type: str = FHIR_JSON) -> list[str]:
    """The English reason texts of the 400, asserting it is the I.3 validation refusal."""
    req = parse_request(method, path, [], body)
    with pytest.raises(GatewayError) as info:
        validate_write(req, content_type)
    err = info.value
    assert (err.status, err.code) == (400, "invalid")
    assert {r.rule for r in err.reasons} == {"fhir.invalid-resource"}
    assert {r.clause for r in err.reasons} == {"I.3"}
    return [r.en for r in err.reasons]


def test_valid_create_passes():
    validate_write(parse_request("POST", "Observation", [], observation()), FHIR_JSON)


def test_valid_update_passes():
    validate_write(parse_request("PUT", "Observation/o1", [], observation(id="o1")), FHIR_JSON)


def test_missing_status_is_named():
    found = problems("POST", "Observation", observation(status=None))
    assert len(found) == 1
    assert "Observation.status" in found[0]


def test_missing_code_is_named():
    found = problems("POST", "Observation", observation(code=None))
    assert any("Observation.code" in p for p in found)


def test_wrong_type_is_named():
    found = problems("POST", "Observation", observation(status=5))
    assert any("Observation.status" in p for p in found)
    found = problems("PUT", "Observation/o1", observation(id="o1", valueQuantity="seventy-two"))
    assert any("Observation.valueQuantity" in p for p in found)


def test_unknown_element_is_refused():
    found = problems("POST", "Observation", observation(heartRate=72))
    assert any("Observation.heartRate" in p for p in found)


def test_several_problems_are_all_reported():
    found = problems("POST", "Observation", observation(status=5, valueQuantity="x", foo=1))
    assert len(found) >= 3
    for element in ("status", "valueQuantity", "foo"):
        assert any(f"Observation.{element}" in p for p in found), element


def test_problem_list_is_capped():
    body = observation(**{f"unknown{i}": i for i in range(MAX_PROBLEMS + 10)})
    assert len(problems("POST", "Observation", body)) == MAX_PROBLEMS


def test_r4_only_type_is_reported_as_unknown():
    """fhir.resources ships R4B: an R4-only type cannot be validated, so it is refused, not waved through."""
    found = problems("POST", "MedicinalProduct", {"resourceType": "MedicinalProduct"})
    assert any("MedicinalProduct" in p and "unknown" in p for p in found)


def test_transaction_bad_entry_is_named_by_index():
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": observation(), "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "GET", "url": "Patient/p1"}},
            {"resource": observation(status=None), "request": {"method": "POST", "url": "Observation"}},
            {"resource": observation(id="o9"), "request": {"method": "PUT", "url": "Observation/o9"}},
        ],
    }
    found = problems("POST", "", bundle)
    assert len(found) == 1
    assert "Bundle.entry[2].resource" in found[0] and "status" in found[0]


def test_valid_transaction_passes():
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": observation(), "request": {"method": "POST", "url": "Observation"}},
            {"request": {"method": "DELETE", "url": "Observation/o2"}},
        ],
    }
    validate_write(parse_request("POST", "", [], bundle), FHIR_JSON)


def test_json_patch_accepts_operation_list():
    ops = [
        {"op": "replace", "path": "/status", "value": "amended"},
        {"op": "add", "path": "/note/0", "value": {"text": "rechecked"}},
        {"op": "remove", "path": "/interpretation"},
        {"op": "test", "path": "/status", "value": "final"},
        {"op": "move", "from": "/note/0", "path": "/note/1"},
        {"op": "copy", "from": "/note/0", "path": "/note/2"},
    ]
    validate_write(parse_request("PATCH", "Observation/o1", [], ops), JSON_PATCH)
    validate_write(parse_request("PATCH", "Observation/o1", [], []), JSON_PATCH)


@pytest.mark.parametrize("body", [{"op": "replace", "path": "/status"}, "replace", None, 3])
def test_json_patch_must_be_a_list(body):
    found = problems("PATCH", "Observation/o1", body, JSON_PATCH)
    assert found == ["invalid FHIR resource: JSON Patch body must be an array of operations"]


def test_json_patch_bad_operations_are_named_by_index():
    ops = [
        {"op": "replace", "path": "/status", "value": "amended"},
        {"op": "delete", "path": "/note"},
        {"op": "add"},
        "remove /note",
        {"op": "remove", "path": 3},
    ]
    found = problems("PATCH", "Observation/o1", ops, JSON_PATCH + "; charset=utf-8")
    assert [p.split(":")[1].strip() for p in found] == ["patch[1]", "patch[2]", "patch[3]", "patch[4]"]


def test_fhirpath_patch_is_refused():
    """A FHIRPath Patch cannot be applied by the gateway to see what it produces: only JSON Patch
    is accepted (security review: a patch could move a record into another patient's chart)."""
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": [{"name": "type", "valueCode": "replace"}]}],
    }
    with pytest.raises(GatewayError) as info:
        validate_write(parse_request("PATCH", "Observation/o1", [], params), FHIR_JSON)
    assert info.value.status == 415 and info.value.reasons[0].rule == "fhir.patch-format"


def test_patch_inside_a_bundle_is_refused():
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {"method": "PATCH", "url": "Observation/o1"},
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": "W10=",
                },
            }
        ],
    }
    with pytest.raises(GatewayError) as info:
        validate_write(parse_request("POST", "", [], bundle), FHIR_JSON)
    assert (
        info.value.reasons[0].rule == "fhir.patch-in-bundle" and "Bundle.entry[0]" in info.value.reasons[0].en
    )


def test_reads_and_deletes_are_not_validated():
    validate_write(parse_request("DELETE", "Observation/o1", []), FHIR_JSON)
    validate_write(parse_request("GET", "Observation", [("patient", "p1")]), FHIR_JSON)


def test_reasons_are_bilingual():
    req = parse_request("POST", "Observation", [], observation(status=None))
    with pytest.raises(GatewayError) as info:
        validate_write(req, FHIR_JSON)
    reason = info.value.reasons[0]
    assert reason.zh.startswith("FHIR 资源不合规")
    assert "Observation.status" in reason.zh
