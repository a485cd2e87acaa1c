"""Every disclosed resource tied to its patients, or it is nobody's it may be shown to (I.4, II.2).

Patients come from references in every form: literal, `#id` into contained resources, `urn:uuid:`
into the enclosing Bundle, and — where the gateway cannot tell who it is — an *unresolved* patient:
a contained or embedded Patient, a reference by identifier or display only, a urn naming nothing.
Stored documents are judged with everything they hold, and released whole or not at all.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.fhir.filter import apply_verdicts
from gateway.fhir.resources import OPERATOR_SYSTEM, UNRESOLVED_PATIENT, collect, resource_patients

MRN = {"system": "https://hospital.example/mrn", "value": "MRN000003"}
NATIONAL_ID = {"system": "urn:oid:2.16.156.10011.1.2", "value": "110101199003077777"}


def observation(subject: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "subject": subject,
        **extra,
    }


def person(rid: str | None = "p9") -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"text": "洪玉英"}],
        "identifier": [NATIONAL_ID],
    }
    if rid:
        out["id"] = rid
    return out


def discharge_summary(subject_ref: str = "urn:uuid:pat", patient_id: str | None = "123") -> dict[str, Any]:
    """A stored document as documents are built: entries referencing each other by urn:uuid."""
    return {
        "resourceType": "Bundle",
        "id": "doc1",
        "type": "document",
        "identifier": {"system": "https://hospital.example/documents", "value": "DS-2026-0001"},
        "timestamp": "2026-12-01T10:00:00Z",
        "entry": [
            {
                "fullUrl": "urn:uuid:comp",
                "resource": {
                    "resourceType": "Composition",
                    "status": "final",
                    "type": {"text": "出院小结"},
                    "subject": {"reference": subject_ref},
                    "title": "discharge summary",
                    "date": "2026-12-01T10:00:00Z",
                    "author": [{"display": "psychiatry ward"}],
                    "section": [{"entry": [{"reference": "urn:uuid:cond"}]}],
                },
            },
            {"fullUrl": "urn:uuid:pat", "resource": person(patient_id)},
            {
                "fullUrl": "urn:uuid:cond",
                "resource": {
                    "resourceType": "Condition",
                    "subject": {"reference": "urn:uuid:pat"},
                    "code": {"text": "抑郁"},
                },
            },
        ],
    }


@pytest.mark.parametrize(
    ("subject", "contained", "expected"),
    [
        ({"reference": "Patient/p1"}, None, {"Patient/p1"}),
        ({"reference": "http://other/fhir/Patient/p1/_history/2"}, None, {"Patient/p1"}),
        ({"reference": "#pat"}, [person("pat")], {UNRESOLVED_PATIENT}),  # contained: no identity
        ({"reference": "#gone"}, [], {UNRESOLVED_PATIENT}),  # a # that names nothing
        ({"display": "洪玉英"}, None, {UNRESOLVED_PATIENT}),  # display only
        ({"identifier": MRN}, None, {UNRESOLVED_PATIENT}),  # identifier only
        ({"identifier": MRN, "type": "Patient"}, None, {UNRESOLVED_PATIENT}),
        ({"reference": "urn:uuid:nowhere"}, None, {UNRESOLVED_PATIENT}),  # a urn naming nothing here
    ],
)
def test_every_reference_form_is_tied_to_a_patient_or_fails_closed(
    subject: dict[str, Any], contained: list[dict[str, Any]] | None, expected: set[str]
) -> None:
    resource = observation(subject, **({"contained": contained} if contained is not None else {}))
    assert resource_patients(resource) == expected
    (root, *children) = collect(resource)
    assert set(root.summary()["patients"]) == expected
    for child in children:  # the contained Patient itself is judged as nobody the server knows
        assert child.summary()["patients"] == [UNRESOLVED_PATIENT]


def test_a_contained_resource_reaches_its_containers_patients_through_hash_references() -> None:
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "subject": {"reference": "Patient/p2"},
    }
    resource = observation({"reference": "Patient/p1"}, encounter={"reference": "#e1"}, contained=[encounter])
    assert resource_patients(resource) == {"Patient/p1", "Patient/p2"}


def test_references_to_people_who_are_plainly_not_patients_name_no_patient() -> None:
    resource = observation(
        {"reference": "Patient/p1"},
        performer=[
            {"identifier": {"system": OPERATOR_SYSTEM, "value": "dr-li"}},  # staff
            {
                "identifier": {"system": "https://hospital.example/staff", "value": "7"},
                "type": "Practitioner",
            },
            {"display": "Dr Wang"},  # display only, but not where the patient is named
        ],
    )
    assert resource_patients(resource) == {"Patient/p1"}


def test_an_audit_event_naming_the_patient_by_identifier_only_is_unresolved() -> None:
    event = {
        "resourceType": "AuditEvent",
        "id": "a1",
        "type": {"code": "rest"},
        "recorded": "2026-12-01T00:00:00Z",
        "agent": [{"requestor": True, "who": {"identifier": {"system": OPERATOR_SYSTEM, "value": "n-1"}}}],
        "source": {"observer": {"display": "EMR"}},
        "entity": [{"what": {"identifier": MRN}}],
    }
    assert resource_patients(event) == {UNRESOLVED_PATIENT}


def test_a_stored_document_is_about_everyone_it_holds() -> None:
    doc = discharge_summary()
    # The embedded Patient has no identity the gateway can vouch for — and may be Patient/123: both
    # count, so that a sealed or out-of-care patient's copy is withheld as the patient's records are.
    both = {UNRESOLVED_PATIENT, "Patient/123"}
    assert resource_patients(doc) == both
    slots = collect(doc)
    assert [s.kind for s in slots] == ["root", "entry", "entry", "entry"]
    for slot in slots:
        assert set(slot.summary()["patients"]) == both, slot.path
    # A document about a patient of the server, by literal reference, is that patient's.
    literal = discharge_summary(subject_ref="Patient/p1")
    literal["entry"] = [e for e in literal["entry"] if e["resource"]["resourceType"] != "Patient"]
    literal["entry"][1]["resource"]["subject"] = {"reference": "Patient/p1"}
    assert resource_patients(literal) == {"Patient/p1"}


def test_a_document_is_released_whole_or_not_at_all() -> None:
    doc = discharge_summary(subject_ref="Patient/p1")
    slots = collect(doc)
    keep: dict[str, Any] = {"keep": True}
    verdicts = [keep, keep, keep, {"keep": False, "reasons": [{"rule": "grade.cap", "en": "x", "zh": "x"}]}]
    result = apply_verdicts(doc, slots, verdicts)  # type: ignore[arg-type]
    assert result.root_dropped and result.root_reasons[0].rule == "document.whole"
    # Inside a search page the document disappears as one entry; its neighbours stay.
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": "http://h/fhir/Bundle/doc1", "resource": discharge_summary(subject_ref="Patient/p1")},
            {
                "fullUrl": "http://h/fhir/Bundle/doc2",
                "resource": {**discharge_summary(subject_ref="Patient/p1"), "id": "doc2"},
            },
        ],
    }
    slots = collect(page)
    verdicts = [{"keep": True} for _ in slots]
    withheld = next(i for i, s in enumerate(slots) if s.path == "entry[0].resource.entry[2].resource")
    verdicts[withheld] = {"keep": False}
    result = apply_verdicts(page, slots, verdicts)  # type: ignore[arg-type]
    assert [e["resource"]["id"] for e in page["entry"]] == ["doc2"]  # doc1 went whole
    assert len(page["entry"][0]["resource"]["entry"]) == 3 and result.dropped == 2


def test_reference_chains_are_bounded_and_fail_closed() -> None:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "entry": []}
    for i in range(20):  # a chain of 20 Observations, each pointing at the next by urn:uuid
        bundle["entry"].append(
            {"fullUrl": f"urn:uuid:{i}", "resource": observation({"reference": f"urn:uuid:{i + 1}"})}
        )
    bundle["entry"].append({"fullUrl": "urn:uuid:20", "resource": observation({"reference": "Patient/p1"})})
    assert UNRESOLVED_PATIENT in resource_patients(bundle)
