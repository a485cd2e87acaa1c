"""Unit tests for the response filter (gateway/fhir/resources.py collect, gateway/fhir/filter.py).

"Filter what comes back, not only what was asked": every resource in a response gets a verdict and
only what the policy keeps leaves the gateway (I.4 minimum necessary); what is released is what the
audit records (II.2 traceability).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.fhir.filter import apply_verdicts
from gateway.fhir.resources import REDACTED_LABEL, UNRESOLVED_PATIENT, Slot, collect

KEEP: dict[str, Any] = {"keep": True}
DROP: dict[str, Any] = {
    "keep": False,
    "reasons": [{"rule": "care-team", "en": "not in care team", "zh": "非诊疗组", "clause": "I.4"}],
}


def obs(rid: str, patient: str | None = "p1", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": "final", "code": {"text": rid}}
    if patient:
        out["subject"] = {"reference": f"Patient/{patient}", "display": f"Name of {patient}"}
    out.update(extra)
    return out


def patient(rid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "Zhang", "given": ["Wei"]}], **extra}


def search_entry(resource: dict[str, Any], mode: str = "match") -> dict[str, Any]:
    return {
        "fullUrl": f"http://h/fhir/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }


def searchset(*entries: dict[str, Any], total: int | None = None, next_link: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": list(entries)}
    out["link"] = [{"relation": "self", "url": "http://h/fhir/Observation?code=x"}]
    if next_link:
        out["link"].append({"relation": "next", "url": "http://h/fhir/Observation?code=x&page=2"})
    if total is not None:
        out["total"] = total
    return out


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle["entry"]]


def run(body: dict[str, Any], verdicts_by_id: dict[str, dict[str, Any]]) -> Any:
    """Apply verdicts chosen by resource id (every resource needs one) and return the result."""
    slots = collect(body)
    verdicts = [verdicts_by_id[s.resource["id"]] for s in slots]
    return apply_verdicts(body, slots, verdicts)


# --- collect ---------------------------------------------------------------------------------------


def test_collect_walks_entries_and_contained_parents_first():
    body = searchset(
        search_entry(obs("o1", contained=[patient("c1")])),
        search_entry(patient("p1"), "include"),
        {"search": {"mode": "outcome"}, "resource": {"resourceType": "OperationOutcome", "issue": []}},
        {"request": {"method": "DELETE", "url": "Observation/o9"}},  # no resource
    )
    slots = collect(body)
    assert [(s.resource["id"], s.kind, s.path) for s in slots] == [
        ("o1", "entry", "entry[0].resource"),
        ("c1", "contained", "entry[0].resource.contained[0]"),
        ("p1", "entry", "entry[1].resource"),
    ]
    # Carriers (Bundle) and OperationOutcomes are not clinical data and get no slot.
    assert all(s.resource["resourceType"] not in ("Bundle", "OperationOutcome") for s in slots)


@pytest.mark.parametrize("body", [None, [], "text", {"id": "x"}, {"resourceType": 1}])
def test_collect_ignores_non_resources(body):
    assert collect(body) == []


def test_single_resource_is_the_root_slot():
    slots = collect(patient("p1"))
    assert [(s.kind, s.path) for s in slots] == [("root", "")]


# --- search pages ----------------------------------------------------------------------------------


def test_dropped_entries_are_removed_in_order():
    """I.4: a withheld resource leaves no entry behind; the others keep their order."""
    body = searchset(
        search_entry(obs("o1")),
        search_entry(obs("o2", "p2")),
        search_entry(obs("o3")),
        search_entry(patient("p1"), "include"),
        search_entry(patient("p2"), "include"),
        search_entry(obs("o4")),
    )
    result = run(body, {"o1": KEEP, "o2": DROP, "o3": KEEP, "p1": KEEP, "p2": DROP, "o4": KEEP})
    assert ids(body) == ["o1", "o3", "p1", "o4"]
    assert result.dropped == 2
    assert "o2" not in json.dumps(body) and "Patient/p2" not in json.dumps(body)


def test_total_on_single_page_counts_kept_matches_only():
    """Bundle.total must not reveal how many resources were withheld (I.4); includes never count."""
    body = searchset(
        search_entry(obs("o1")),
        search_entry(obs("o2")),
        search_entry(obs("o3")),
        search_entry(patient("p1"), "include"),
        total=3,
    )
    run(body, {"o1": KEEP, "o2": DROP, "o3": KEEP, "p1": KEEP})
    assert body["total"] == 2


def test_total_counts_entries_without_search_mode_as_matches():
    body = searchset({"resource": obs("o1")}, {"resource": obs("o2")}, total=2)
    run(body, {"o1": DROP, "o2": KEEP})
    assert body["total"] == 1


def test_total_removed_when_more_pages_follow():
    """Across pages the gateway cannot know the true count: the upstream total must disappear."""
    body = searchset(search_entry(obs("o1")), search_entry(obs("o2")), total=987, next_link=True)
    run(body, {"o1": KEEP, "o2": DROP})
    assert "total" not in body
    assert "987" not in json.dumps(body)
    assert ids(body) == ["o1"]


def test_total_removed_with_next_link_even_when_nothing_dropped():
    body = searchset(search_entry(obs("o1")), total=55, next_link=True)
    run(body, {"o1": KEEP})
    assert "total" not in body


def test_history_total_is_fixed_too():
    body = {
        "resourceType": "Bundle",
        "type": "history",
        "total": 3,
        "entry": [{"resource": obs(f"o{i}")} for i in range(3)],
    }
    run(body, {"o0": DROP, "o1": DROP, "o2": KEEP})
    assert body["total"] == 1
    assert ids(body) == ["o2"]


def test_no_total_is_invented():
    body = searchset(search_entry(obs("o1")), search_entry(obs("o2")))
    run(body, {"o1": KEEP, "o2": DROP})
    assert "total" not in body


def test_everything_dropped_leaves_an_empty_page():
    body = searchset(search_entry(obs("o1")), search_entry(obs("o2")), total=2)
    result = run(body, {"o1": DROP, "o2": DROP})
    assert "entry" not in body  # empty the way a page that matched nothing is (no `"entry": []`)
    assert "total" not in body  # nor "0", which beside the absent total of other pages told (red team)
    assert result.disclosed == [] and result.disclosed_patients == set()


def test_missing_keep_means_drop():
    """Fail closed: a verdict that does not say keep=true withholds the resource (I.4)."""
    body = searchset(search_entry(obs("o1")), search_entry(obs("o2")))
    slots = collect(body)
    apply_verdicts(body, slots, [{"redact": []}, {"keep": True}])
    assert ids(body) == ["o2"]


# --- contained -------------------------------------------------------------------------------------


def test_dropped_contained_resource_is_removed():
    body = obs("o1", contained=[patient("c1"), {"resourceType": "Practitioner", "id": "c2"}, patient("c3")])
    result = run(body, {"o1": KEEP, "c1": DROP, "c2": KEEP, "c3": DROP})
    assert [c["id"] for c in body["contained"]] == ["c2"]
    assert result.root_dropped is False
    assert result.disclosed == ["Observation/o1", "Practitioner/c2"]


def test_contained_in_bundle_entry_is_removed():
    body = searchset(search_entry(obs("o1", contained=[patient("c1")])), total=1)
    run(body, {"o1": KEEP, "c1": DROP})
    assert body["entry"][0]["resource"]["contained"] == []
    assert body["total"] == 1


# --- redaction -------------------------------------------------------------------------------------


def test_redaction_in_bundle_and_contained_marks_redacted():
    """I.4: a kept resource may still lose elements; the client is told by the REDACTED label."""
    body = searchset(
        search_entry(obs("o1", contained=[patient("c1", gender="female")])),
        search_entry(patient("p1", birthDate="1970-01-01"), "include"),
    )
    result = run(
        body,
        {
            "o1": {"keep": True, "redact": ["subject.display"]},
            "c1": {"keep": True, "redact": ["name"]},
            "p1": {"keep": True, "redact": ["name", "birthDate"]},
        },
    )
    o1 = body["entry"][0]["resource"]
    assert o1["subject"] == {"reference": "Patient/p1"}
    assert "name" not in o1["contained"][0] and o1["contained"][0]["gender"] == "female"
    p1 = body["entry"][1]["resource"]
    assert "name" not in p1 and "birthDate" not in p1
    for resource in (o1, o1["contained"][0], p1):
        assert resource["meta"]["security"] == [REDACTED_LABEL]
    assert result.redacted == 3
    assert result.dropped == 0


def test_redaction_through_lists():
    body = patient("p1", name=[{"family": "A", "given": ["x"]}, {"family": "B", "given": ["y"]}])
    result = run(body, {"p1": {"keep": True, "redact": ["name.given"]}})
    assert body["name"] == [{"family": "A"}, {"family": "B"}]
    assert result.redacted == 1


def test_no_label_when_no_redaction_was_asked():
    body = searchset(search_entry(obs("o1", patient=None)))
    before = copy.deepcopy(body)
    result = run(body, {"o1": {"keep": True, "redact": []}})
    assert body == before  # in particular no meta.security REDACTED label
    assert result.redacted == 0


def test_redaction_asked_removes_narrative_even_if_elements_absent():
    """`_summary=text` returns a Patient without `name` but with the narrative that spells it:
    a redaction verdict must still remove the narrative (I.4)."""
    p = {"resourceType": "Patient", "id": "p1", "text": {"status": "generated", "div": "<div>王伟</div>"}}
    body = searchset(search_entry(p))
    result = run(body, {"p1": {"keep": True, "redact": ["name"]}})
    assert "text" not in body["entry"][0]["resource"]
    assert result.redacted == 1


def test_redacted_label_is_not_duplicated_and_other_labels_stay():
    other = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    body = patient("p1", meta={"security": [other, dict(REDACTED_LABEL)]})
    run(body, {"p1": {"keep": True, "redact": ["name"]}})
    assert body["meta"]["security"] == [other, REDACTED_LABEL]


# --- batch / transaction responses ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["batch-response", "transaction-response"])
def test_response_bundle_entry_keeps_position_but_loses_resource(kind):
    """Entries answer request entries one to one: the position stays, the resource goes (I.4)."""
    body = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": obs("o1"), "response": {"status": "200 OK"}},
            {
                "fullUrl": "http://h/fhir/Observation/o2",
                "resource": obs("o2", "p2"),
                "response": {
                    "status": "201 Created",
                    "location": "Observation/o2/_history/1",
                    "etag": 'W/"1"',
                },
            },
            {"resource": obs("o3"), "response": {"status": "200 OK"}},
        ],
    }
    result = run(body, {"o1": KEEP, "o2": DROP, "o3": KEEP})
    assert len(body["entry"]) == 3
    assert body["entry"][0]["resource"]["id"] == "o1" and body["entry"][2]["resource"]["id"] == "o3"
    dropped = body["entry"][1]
    assert "resource" not in dropped and "fullUrl" not in dropped
    # Answered as an id the server does not have (red team: 403 beside 404 told which ids exist);
    # the policy's reasons are for the audit record only.
    assert dropped["response"]["status"] == "404 Not Found"
    assert "location" not in dropped["response"] and "etag" not in dropped["response"]
    outcome = dropped["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"
    assert "fhir.not-available" in json.dumps(outcome) and "not in care team" not in json.dumps(outcome)
    assert "o2" not in json.dumps(body) and "Patient/p2" not in json.dumps(body)
    assert result.disclosed == ["Observation/o1", "Observation/o3"]


def test_a_withheld_entry_and_an_unknown_id_read_alike_in_a_batch_response() -> None:
    body = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"resource": obs("o1"), "response": {"status": "200 OK"}},
            {
                "response": {
                    "status": "404",
                    "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [
                            {
                                "severity": "error",
                                "code": "not-found",
                                "diagnostics": "Resource Observation/zz is not known",
                            }
                        ],
                    },
                }
            },
            {"response": {"status": "410 Gone"}},
        ],
    }
    run(body, {"o1": {"keep": False}})
    first, *others = (e["response"] for e in body["entry"])
    assert all(r == first for r in others), body["entry"]
    assert first["status"] == "404 Not Found" and "Observation/zz" not in json.dumps(body)


def test_nested_bundle_in_batch_response_is_walked():
    """A search inside a batch returns a searchset inside an entry: its resources are filtered too."""
    inner = searchset(search_entry(obs("o2", "p2")), search_entry(obs("o3", "p3")), total=2)
    body = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {"resource": obs("o1"), "response": {"status": "200 OK"}},
            {"resource": inner, "response": {"status": "200 OK"}},
        ],
    }
    slots = collect(body)
    assert [s.path for s in slots] == [
        "entry[0].resource",
        "entry[1].resource.entry[0].resource",
        "entry[1].resource.entry[1].resource",
    ]
    assert [s.bundle["type"] for s in slots] == ["batch-response", "searchset", "searchset"]
    result = apply_verdicts(body, slots, [KEEP, DROP, KEEP])
    assert ids(inner) == ["o3"]  # a searchset entry is removed, not replaced by a 403
    assert inner["total"] == 1
    assert body["entry"][1]["response"]["status"] == "200 OK"
    assert result.disclosed_patients == {"Patient/p1", "Patient/p3"}


# --- root resource -----------------------------------------------------------------------------------


def test_dropped_root_sets_root_dropped():
    body = patient("p1")
    result = run(body, {"p1": DROP})
    assert result.root_dropped is True
    assert [(r.rule, r.clause, r.en) for r in result.root_reasons] == [
        ("care-team", "I.4", "not in care team")
    ]
    assert result.disclosed == [] and result.disclosed_patients == set()


def test_root_reasons_accept_bare_strings():
    result = run(obs("o1"), {"o1": {"keep": False, "reasons": ["sealed record"]}})
    assert result.root_dropped
    assert result.root_reasons[0].rule == "policy" and result.root_reasons[0].en == "sealed record"


def test_kept_root_is_disclosed():
    result = run(obs("o1", "p7"), {"o1": KEEP})
    assert result.root_dropped is False
    assert result.disclosed == ["Observation/o1"]
    assert result.disclosed_patients == {"Patient/p7"}


# --- Parameters ------------------------------------------------------------------------------------


def test_parameters_resources_and_parts_are_walked():
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "return", "resource": patient("p1")},
            {"name": "count", "valueInteger": 2},
            {
                "name": "match",
                "part": [
                    {"name": "resource", "resource": patient("p2")},
                    {"name": "score", "valueDecimal": 0.9},
                    {"name": "resource", "resource": patient("p3")},
                ],
            },
        ],
    }
    slots = collect(body)
    assert [(s.resource["id"], s.kind, s.path) for s in slots] == [
        ("p1", "parameter", "parameter[0].resource"),
        ("p2", "parameter", "parameter[2].part[0].resource"),
        ("p3", "parameter", "parameter[2].part[2].resource"),
    ]
    result = apply_verdicts(body, slots, [DROP, KEEP, DROP])
    assert [p["name"] for p in body["parameter"]] == ["count", "match"]
    assert body["parameter"][1]["part"] == [
        {"name": "resource", "resource": patient("p2")},
        {"name": "score", "valueDecimal": 0.9},
    ]
    assert result.root_dropped is False  # Parameters is only a carrier
    assert result.disclosed_patients == {"Patient/p2"}


def test_bundle_inside_parameters_is_walked():
    inner = searchset(search_entry(obs("o1")), search_entry(obs("o2", "p2")), total=2)
    body = {"resourceType": "Parameters", "parameter": [{"name": "return", "resource": inner}]}
    run(body, {"o1": KEEP, "o2": DROP})
    assert ids(inner) == ["o1"] and inner["total"] == 1


# --- what is disclosed (II.2) --------------------------------------------------------------------------


def test_disclosed_patients_are_those_of_what_remains():
    """II.2: the audit records the patients whose data actually left, not those that were asked for."""
    body = searchset(
        search_entry(obs("o1", "a")),
        search_entry(obs("o2", "b")),
        search_entry(obs("o3", "c", contained=[patient("d")])),
        search_entry(patient("e"), "include"),
        search_entry(obs("o4", "f")),
    )
    result = run(
        body,
        {
            "o1": KEEP,
            "o2": DROP,
            "o3": KEEP,
            "d": DROP,
            "e": KEEP,
            "o4": {"keep": True, "redact": ["subject"]},
        },
    )
    # o4 left without its subject: a record of someone the audit cannot name (the unresolved patient)
    assert result.disclosed_patients == {"Patient/a", "Patient/c", "Patient/e", UNRESOLVED_PATIENT}
    assert result.disclosed == ["Observation/o1", "Observation/o3", "Patient/e", "Observation/o4"]


# --- verdict list must line up --------------------------------------------------------------------------


@pytest.mark.parametrize("verdicts", [[KEEP], [KEEP, KEEP, KEEP]])
def test_verdict_count_must_match_slots(verdicts):
    """A verdict list that does not line up with the resources must never be applied silently."""
    body = searchset(search_entry(obs("o1")), search_entry(obs("o2")))
    slots = collect(body)
    with pytest.raises(ValueError):
        apply_verdicts(body, slots, verdicts)


# --- Slot.summary ----------------------------------------------------------------------------------------


def test_summary_carries_what_the_policy_grades_on():
    resource = obs(
        "o1",
        "p9",
        meta={
            "security": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                    "code": "R",
                    "display": "restricted",
                }
            ],
            "tag": [{"system": "urn:tag", "code": "t1"}],
        },
        code={
            "coding": [{"system": "http://loinc.org", "code": "75622-1"}, {"code": "HIV-1"}],
            "text": "HIV",
        },
        category=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "10828004"}]},
    )
    body = searchset(search_entry(resource, "match"))
    (slot,) = collect(body)
    summary = slot.summary()
    assert summary["type"] == "Observation"
    assert summary["id"] == "o1"
    assert summary["patient"] == "Patient/p9"
    assert summary["patients"] == ["Patient/p9"]
    assert summary["security"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    ]
    assert summary["tags"] == [{"system": "urn:tag", "code": "t1"}]
    assert summary["codes"] == [
        {"system": "http://loinc.org", "code": "75622-1"},
        {"system": "", "code": "HIV-1"},
        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"},
        {"system": "http://snomed.info/sct", "code": "10828004"},
    ]
    assert summary["kind"] == "entry"
    assert summary["search_mode"] == "match"
    assert summary["bundle_type"] == "searchset"
    assert summary["path"] == "entry[0].resource"


def test_summary_of_patient_and_contained():
    body = obs("o1", patient=None, contained=[patient("c1")])
    root, child = collect(body)
    # an Observation that names no patient is about someone unknown (PERSON_RECORDS): unresolved
    assert root.summary()["patient"] == UNRESOLVED_PATIENT and root.summary()["patients"] == [
        UNRESOLVED_PATIENT
    ]
    assert root.summary()["kind"] == "root" and root.summary()["search_mode"] is None
    s = child.summary()
    # A contained Patient's id is local to its container: it names no patient of the server, so the
    # person is unknown to the gateway (unresolved: only hospital-wide roles see it), never Patient/c1.
    assert (s["type"], s["id"], s["patient"], s["kind"]) == ("Patient", "c1", UNRESOLVED_PATIENT, "contained")
    assert s["security"] == [] and s["codes"] == []


def test_summary_patient_from_absolute_and_versioned_references():
    slot = Slot(
        {
            "resourceType": "Encounter",
            "id": "e1",
            "subject": {"reference": "http://h/fhir/Patient/p5/_history/2"},
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        },
        "root",
        "",
    )
    summary = slot.summary()
    assert summary["patient"] == "Patient/p5"
    assert summary["codes"] == [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}]


def test_summary_search_mode_of_include():
    (slot,) = collect(searchset(search_entry(patient("p1"), "include")))
    assert slot.summary()["search_mode"] == "include"


def test_total_without_entries_is_removed():
    """`_count=0` answers with a bare total: the count of records the operator may not see (I.4)."""
    body = searchset(total=42)
    apply_verdicts(body, collect(body), [])
    assert "total" not in body


def test_total_removed_on_last_page():
    """The last page has no next link, but earlier pages' withheld entries are unknown here."""
    body = searchset(search_entry(obs("o1")), total=21)
    body["link"] = [{"relation": "previous", "url": "http://gw/fhir/Observation?_offset=0"}]
    apply_verdicts(body, collect(body), [KEEP])
    assert "total" not in body


def test_wrong_verdict_count_changes_nothing():
    body = searchset(search_entry(obs("o1")), search_entry(obs("o2")), total=2)
    before = json.dumps(body, sort_keys=True)
    with pytest.raises(ValueError):
        apply_verdicts(body, collect(body), [DROP])
    assert json.dumps(body, sort_keys=True) == before


def test_redaction_removes_the_narrative_that_repeats_the_fields():
    """The narrative of a synthetic patient reads "何丹，女，出生日期 1955-03-19": redacting the
    name must not leave it in text.div (I.4 minimum necessary)."""
    p = patient("p1")
    p["name"] = [{"family": "何", "given": ["丹"]}]
    p["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">何丹，女</div>'}
    body = searchset(search_entry(p), total=1)
    apply_verdicts(body, collect(body), [{"keep": True, "redact": ["name"]}])
    kept = body["entry"][0]["resource"]
    assert "name" not in kept and "text" not in kept
    assert "何丹" not in json.dumps(body, ensure_ascii=False)


def test_narrative_kept_when_nothing_is_to_be_redacted():
    p = patient("p1")
    p["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}
    body = searchset(search_entry(p), total=1)
    apply_verdicts(body, collect(body), [{"keep": True, "redact": []}])
    assert "text" in body["entry"][0]["resource"]


def test_last_link_goes_with_the_total():
    """A `last` link's _offset tells the upstream's count as well as `total` would (I.4)."""
    body = searchset(search_entry(obs("o1")), total=7, next_link=True)
    body["link"].append({"relation": "last", "url": "http://h/fhir/Observation?_count=1&_offset=6"})
    apply_verdicts(body, collect(body), [DROP])
    assert [link["relation"] for link in body["link"]] == [
        r for r in ("self", "next") if any(link["relation"] == r for link in body["link"])
    ]
    assert "last" not in json.dumps(body["link"])


def test_stored_document_bundle_is_judged_as_a_whole():
    """A stored Bundle carries its own labels: it is a resource to judge, not just a carrier."""
    v = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}
    doc = {
        "resourceType": "Bundle",
        "id": "b1",
        "type": "collection",
        "meta": {"security": [v]},
        "entry": [{"resource": obs("o1")}],
    }
    slots = collect(doc)
    assert [(s.resource["resourceType"], s.kind) for s in slots] == [
        ("Bundle", "root"),
        ("Observation", "entry"),
    ]
    assert slots[0].summary()["security"] == [v]
    result = apply_verdicts(doc, slots, [DROP, KEEP])
    assert result.root_dropped


def test_distinct_entries_share_a_verdict_by_content_not_by_id():
    """A page of one patient's heart rates is one entry to the policy; a different code is another."""
    from gateway.decide import distinct_entries

    body = searchset(search_entry(obs("o1")), search_entry(obs("o2")), search_entry(obs("o3", "p9")))
    entries = [s.summary() for s in collect(body)]
    distinct, index = distinct_entries(entries)
    assert len(distinct) == 2 and index == [0, 0, 1]
    assert distinct[0]["id"] == "o1"  # the representative keeps its own id and path


def test_a_page_whose_every_entry_is_withheld_looks_like_no_match() -> None:
    """`"entry": []` after the filter, beside a page with no `entry` at all for no match, told an
    insider that withheld records exist (tests/hostile/test_insiders.py found it)."""
    body = searchset(search_entry(obs("o1")), search_entry(obs("o2")))
    no_match: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": body["link"]}
    slots = collect(body)
    apply_verdicts(body, slots, [{"keep": False}, {"keep": False}])
    assert "entry" not in body and body.keys() == no_match.keys()
