"""Search parameters allow-listed per resource type (I.4, issue 13 "Deliver" 4, first layer).

A parameter the gateway does not understand reaches the upstream unexamined: a case variant some
servers read leniently (`PATIENT=`), a reference by identifier that names a patient the gateway never
sees (`subject:identifier=<mrn>`), a modifier that selects by graded content in a way the policy
cannot bound (`code:text=HIV`, `code:in=<ValueSet>`), a free-text or filter search. Each is an oracle
or a way around the patient-scoped checks, so each is refused with a 400 OperationOutcome that names
only the parameter the requester sent; the searches clinicians use every day still pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import rules
from gateway.errors import GatewayError, operation_outcome
from gateway.fhir.params import check_search
from gateway.fhir.request import FhirRequest, parse_request
from gateway.fhir.resource_types import RESOURCE_TYPES
from gateway.fhir.search_params import COMMON_PARAMS, SEARCH_PARAMS

ROOT = Path(__file__).resolve().parents[3]
KINDS = {"token", "reference", "string", "date", "quantity", "number", "uri", "composite", "special"}
ICD10 = "http://hl7.org/fhir/sid/icd-10"


def refused(method: str, path: str, query: list[tuple[str, str]], body: Any = None) -> GatewayError:
    with pytest.raises(GatewayError) as exc:
        parse_request(method, path, query, body)
    assert exc.value.status == 400
    return exc.value


# --- the table --------------------------------------------------------------------------------------


def test_the_table_holds_every_r4_resource_type_and_no_other() -> None:
    assert set(SEARCH_PARAMS) == RESOURCE_TYPES


def test_every_parameter_has_an_r4_type_and_references_name_real_types() -> None:
    for rtype, params in {**SEARCH_PARAMS, "(common)": COMMON_PARAMS}.items():
        for name, p in params.items():
            assert p.kind in KINDS, (rtype, name, p)
            if p.kind == "reference":
                assert p.targets == ("*",) or set(p.targets) <= RESOURCE_TYPES, (rtype, name, p)
                assert p.targets, (rtype, name)
            if p.kind == "token":
                assert p.selects in {"coding", "code", "boolean", "identifier", "other"}, (rtype, name)


def test_the_common_parameters_are_every_types() -> None:
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= set(COMMON_PARAMS)
    assert COMMON_PARAMS["_lastUpdated"].kind == "date"
    # Security labels and tags are codings: graded content (the policy grades them as labels).
    assert COMMON_PARAMS["_security"].selects == COMMON_PARAMS["_tag"].selects == "coding"
    assert not any(name in params for params in SEARCH_PARAMS.values() for name in COMMON_PARAMS)


@pytest.mark.parametrize(
    ("rtype", "name", "kind", "selects", "targets"),
    [
        ("Observation", "code", "token", "coding", ()),
        ("Observation", "status", "token", "code", ()),
        ("Observation", "value-concept", "token", "coding", ()),
        ("Observation", "code-value-quantity", "composite", "", ()),
        ("Observation", "date", "date", "", ()),
        ("Observation", "patient", "reference", "", ("Patient",)),
        ("Observation", "subject", "reference", "", ("Device", "Group", "Location", "Patient")),
        ("Observation", "focus", "reference", "", ("*",)),
        ("Condition", "clinical-status", "token", "coding", ()),
        ("Patient", "identifier", "token", "identifier", ()),
        ("Patient", "active", "token", "boolean", ()),
        ("Patient", "gender", "token", "code", ()),
        ("Patient", "name", "string", "", ()),
        ("Patient", "telecom", "token", "other", ()),
        ("Encounter", "type", "token", "coding", ()),
        ("Provenance", "target", "reference", "", ("*",)),
        ("Coverage", "beneficiary", "reference", "", ("Patient",)),
        ("Location", "near", "special", "", ()),
    ],
)
def test_the_table_says_what_r4_says(rtype: str, name: str, kind: str, selects: str, targets: tuple) -> None:
    p = SEARCH_PARAMS[rtype][name]
    assert (p.kind, p.selects, p.targets) == (kind, selects, targets)


def test_the_generated_module_is_what_the_generator_makes_of_the_r4_definitions() -> None:
    """gateway/fhir/search_params.py is source (no node at run time), but never hand-edited."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-search-params.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr


# --- searches clinicians use pass -------------------------------------------------------------------

ALLOWED = [
    ("GET", "Observation", "patient=x&code=http://loinc.org|8867-4&date=ge2024-01-01&_sort=-date&_count=10"),
    ("GET", "Encounter", "subject=Patient/x&status=in-progress"),
    ("GET", "Patient", "identifier=urn:oid:2.16.156.emrguard.mrn|MRN000003"),
    ("GET", "Patient", "name=王&birthdate=1970-01-01&gender=female"),
    ("GET", "Patient", "family:exact=王&given:contains=英"),
    ("GET", "Condition", "patient=x&_include=Condition:subject"),
    ("GET", "Condition", "patient=x&clinical-status=active&category=problem-list-item"),
    ("GET", "Condition", f"patient=x&code={ICD10}|I10,{ICD10}|E11"),
    ("GET", "Condition", "subject=x&clinical-status:missing=true"),
    ("GET", "Observation", "subject=Patient/x&_count=100"),  # bench/run.py
    ("GET", "Observation", "subject:Patient=x&category=vital-signs&_sort=-date,_lastUpdated"),
    ("GET", "Observation", "patient=x&code-value-quantity=http://loinc.org|8867-4$gt100"),
    ("GET", "Observation", "patient=x&status:not=entered-in-error"),
    ("GET", "Observation", "_id=o1&_include=*&_include:iterate=Observation:has-member"),
    ("GET", "Observation", "patient=x&_include=Observation:subject:Patient&_revinclude=Provenance:target"),
    ("GET", "Observation", "patient=x&_summary=true&_elements=code,value&_total=accurate"),
    ("GET", "Observation", "patient=x&_format=json&_pretty=true"),
    ("GET", "Observation", "patient=x&_lastUpdated=gt2024-01-01&_tag=http://example.org/tags|x"),
    ("GET", "Observation", "patient=x&_profile:below=http://hl7.org/fhir/StructureDefinition/vitalsigns"),
    ("GET", "MedicationRequest", "patient=x&intent=order&status=active&authoredon=ge2024"),
    ("GET", "DiagnosticReport", "patient=x&category=LAB&_sort=-issued"),
    ("GET", "AllergyIntolerance", "patient=x&criticality=high"),
    ("GET", "Encounter", "type=cardiology&_count=200"),
    ("GET", "Practitioner", "_id=pr1&_revinclude=Encounter:participant"),
    ("GET", "Patient", "_id=p1&_revinclude=*"),
    ("GET", "Location", "near=39.9|116.4|10|km"),
    # Chains and _has the policy reads (it refuses them below grade 5 for the purpose).
    ("GET", "Observation", "subject.name=王"),
    ("GET", "Observation", "subject:Patient.identifier=MRN000003"),
    ("GET", "Observation", "patient.birthdate=1970-01-01"),
    ("GET", "Patient", "_has:Observation:patient:date=ge2024-01-01"),
    ("GET", "Patient", "_has:Observation:subject:_id=o1"),
    ("GET", "Patient", "_has:Observation:patient:_has:Provenance:target:agent=Practitioner/pr1"),
    # POST _search, the compartment, a system search, conditional writes.
    ("POST", "Observation/_search", "patient=x&code=http://loinc.org|8867-4"),
    ("GET", "Patient/x/Observation", "code=http://loinc.org|8867-4&_count=5"),
    ("GET", "", "_type=Observation,Condition&patient=x&_count=10"),
    ("GET", "", "_type=Patient&_id=x"),
    ("GET", "", "_id=x"),
    ("POST", "_search", "_type=Patient&identifier=MRN000003"),
    ("DELETE", "Observation", "patient=Patient/x&identifier=lab|42"),
]


def _pairs(query: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in query.split("&")]  # type: ignore[misc]


@pytest.mark.parametrize(("method", "path", "query"), ALLOWED, ids=[f"{m} {p}?{q}" for m, p, q in ALLOWED])
def test_a_clinical_search_passes(method: str, path: str, query: str) -> None:
    req = parse_request(method, path, _pairs(query))
    assert req.params == {k: [v for kk, v in _pairs(query) if kk == k] for k, _ in _pairs(query)}


def test_a_conditional_update_with_a_known_search_passes() -> None:
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    assert parse_request("PUT", "Observation", [("identifier", "lab|42")], body).conditional


def test_a_format_other_than_json_is_refused_wherever_it_is_given() -> None:
    """check_format reads the URL; a POST _search form or a batch entry carries `_format` too."""
    with pytest.raises(GatewayError) as exc:
        parse_request("POST", "Observation/_search", [("patient", "x"), ("_format", "xml")])
    assert exc.value.status == 406 and exc.value.reasons[0].rule == rules.FORMAT_NOT_ACCEPTABLE


def test_the_gateways_own_parameters_pass_the_check() -> None:
    """`_cursor` is consumed by the pipeline before the parse (gateway/paging.py), `_format` is
    checked by check_format: neither is refused here."""
    check_search("Observation", {"_cursor": ["t0k3n"], "_format": ["application/fhir+json"]})
    check_search(None, {"_cursor": ["t0k3n"]})


# --- what the gateway cannot reason about is refused ------------------------------------------------

UNKNOWN, NOT_SERVED, MODIFIER = (
    rules.SEARCH_UNKNOWN_PARAM,
    rules.SEARCH_PARAM_NOT_SERVED,
    rules.SEARCH_MODIFIER_NOT_SERVED,
)
CHAIN, BAD = rules.SEARCH_CHAIN_NOT_SERVED, rules.SEARCH_BAD_VALUE
REFUSED = [
    # names: exact case, R4 only, the type's own
    ("Condition", "PATIENT", "x", UNKNOWN),
    ("Observation", "SUBJECT", "Patient/x", UNKNOWN),
    ("Patient", "_HAS:Condition:subject:code", "B20", UNKNOWN),
    ("Patient", "_ID", "x", UNKNOWN),
    ("Condition", "nonsense", "1", UNKNOWN),
    ("Observation", "beneficiary", "Patient/x", UNKNOWN),  # Coverage's, not Observation's
    ("Observation", "patient[]", "x", UNKNOWN),
    ("Observation", "patient\x00", "x", UNKNOWN),
    ("Observation", "_offset", "20", UNKNOWN),
    ("Observation", "_getpages", "uuid", UNKNOWN),
    ("Observation", "_since", "2020", UNKNOWN),
    ("Observation", "_has", "x", UNKNOWN),
    # free text, filters, named queries, lists, contained results
    ("Condition", "_content", "HIV", NOT_SERVED),
    ("Condition", "_text", "HIV", NOT_SERVED),
    ("Observation", "_filter", "subject eq Patient/x", NOT_SERVED),
    ("Condition", "_query", "hiv-patients", NOT_SERVED),
    ("Condition", "_list", "$current-problems", NOT_SERVED),
    ("Condition", "_contained", "true", NOT_SERVED),
    ("Condition", "_containedType", "contained", NOT_SERVED),
    ("Condition", "_type", "Patient", NOT_SERVED),
    ("Condition", "_sort", "code", NOT_SERVED),
    ("Condition", "_sort", "-_security", NOT_SERVED),
    # modifiers
    ("Observation", "subject:identifier", "MRN000009", MODIFIER),
    ("Observation", "patient:identifier", "urn:oid:2.16.156.emrguard.mrn|MRN000009", MODIFIER),
    ("Observation", "subject:patient", "Patient/x", MODIFIER),  # a type modifier is the type's name
    ("Observation", "subject:Medication", "m1", MODIFIER),  # not a target of subject
    ("Observation", "subject:not", "Patient/x", MODIFIER),
    ("Patient", "_id:not", "x", MODIFIER),
    ("Patient", "_id:exact", "x", MODIFIER),
    ("Patient", "_id:below", "x", MODIFIER),
    ("Patient", "identifier:not", "MRN000009", MODIFIER),
    ("Patient", "identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN000009", MODIFIER),
    ("Patient", "identifier:text", "MRN", MODIFIER),
    ("Patient", "telecom:not", "x", MODIFIER),
    ("Condition", "code:not", f"{ICD10}|I10", MODIFIER),
    ("Condition", "code:below", f"{ICD10}|B", MODIFIER),
    ("Condition", "code:above", f"{ICD10}|B20.1", MODIFIER),
    ("Condition", "code:in", "http://example.org/ValueSet/hiv", MODIFIER),
    ("Condition", "code:not-in", "http://example.org/ValueSet/harmless", MODIFIER),
    ("Condition", "code:text", "HIV", MODIFIER),
    ("Condition", "code:of-type", "x", MODIFIER),
    ("Condition", "code:exact", "B20", MODIFIER),
    ("Condition", "clinical-status:not", "resolved", MODIFIER),
    ("Observation", "value-concept:text", "positive", MODIFIER),
    ("Observation", "_security:not", "http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV", MODIFIER),
    ("Observation", "_tag:text", "HIV", MODIFIER),
    ("Observation", "code-value-quantity:not", "x$1", MODIFIER),
    ("Observation", "date:not", "2020", MODIFIER),
    ("Observation", "value-quantity:text", "x", MODIFIER),
    ("Patient", "name:text", "王", MODIFIER),
    ("Patient", "name:Exact", "王", MODIFIER),
    ("Observation", "_count:missing", "true", MODIFIER),
    ("Observation", "_include:recurse", "Observation:subject", MODIFIER),
    # chains and _has: known links only, and never ending in graded content
    ("Patient", "_has:Condition:patient:code", "B20", CHAIN),
    ("Patient", "_has:Condition:subject:code", f"{ICD10}|B20", CHAIN),
    ("Patient", "_has:Observation:patient:_security", "x|HIV", CHAIN),
    ("Patient", "_has:Observation:patient:code-value-concept", "x$y", CHAIN),
    ("Patient", "_has:Observation:patient:subject.name", "王", CHAIN),
    ("Patient", "_has:Condition:patient:code:not", "I10", CHAIN),
    ("Patient", "_has:Condition:nonsense:code", "B20", UNKNOWN),
    ("Patient", "_has:Condition:code:code", "B20", UNKNOWN),  # code is no reference
    ("Patient", "_has:Nonsense:patient:code", "B20", UNKNOWN),
    ("Patient", "_has:Condition:patient", "B20", UNKNOWN),
    ("Patient", "_has:Condition:encounter:onset-date", "2020", UNKNOWN),  # to an Encounter
    ("Encounter", "service-type", "cardiology", UNKNOWN),  # R5's, not R4's
    ("Observation", "_has:Condition:patient:onset-date", "2020", UNKNOWN),  # not to Observation
    ("Observation", "encounter.type", "x", CHAIN),
    ("DiagnosticReport", "result.code", f"{ICD10}|B20", CHAIN),
    ("Observation", "subject:Patient._has:Condition:patient:code", "B20", UNKNOWN),
    ("Observation", "subject.nonsense", "x", UNKNOWN),
    ("Observation", "subject:Patient.nam", "x", UNKNOWN),
    ("Observation", "code.name", "x", UNKNOWN),  # code is no reference
    ("Observation", "subject:Medication.code", "x", UNKNOWN),
    ("Observation", "subject..name", "x", UNKNOWN),
    ("Observation", "subject.name:text", "x", MODIFIER),
    ("Observation", "subject.identifier:of-type", "x", MODIFIER),
    # result parameters with values they do not take
    ("Observation", "_count", "lots", BAD),
    ("Observation", "_count", "-1", BAD),
    ("Observation", "_summary", "maybe", BAD),
    ("Observation", "_total", "all", BAD),
    ("Observation", "_pretty", "yes", BAD),
    ("Observation", "_elements", "code,value[x]", BAD),
    ("Observation", "_include", "Observation:code", BAD),
    ("Observation", "_include", "Observation:subject:Medication", BAD),
    ("Observation", "_include", "observation:subject", BAD),
    ("Observation", "_revinclude", "Nonsense:target", BAD),
    ("Observation", "subject:missing", "maybe", BAD),
    ("Observation", "_sort", "nonsense", UNKNOWN),
]


@pytest.mark.parametrize(
    ("rtype", "key", "value", "rule"), REFUSED, ids=[f"{t}?{k}" for t, k, _, _ in REFUSED]
)
def test_what_the_gateway_cannot_reason_about_is_refused(rtype: str, key: str, value: str, rule: str) -> None:
    err = refused("GET", rtype, [("patient" if rtype != "Patient" else "_id", "x"), (key, value)])
    reason = err.reasons[0]
    assert reason.rule == rule and reason.clause == "I.4", reason
    outcome = operation_outcome(err, "req-1")
    text = str(outcome)
    # It names the parameter the requester sent, in both languages, and nothing else of the request.
    shown = key[:80]
    assert shown in reason.en and shown in reason.zh
    if len(value) > 4 and value not in key and key != "_sort":  # (a sort names what it sorts by)
        assert value not in text, text
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == rule


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("patient", "x", UNKNOWN),  # a system search without _type: the common parameters only
        ("_has:Observation:patient:date", "2020", CHAIN),  # _has needs one type
    ],
)
def test_a_system_search_takes_the_common_parameters_or_those_of_every_type_named(
    key: str, value: str, rule: str
) -> None:
    assert refused("GET", "", [(key, value)]).reasons[0].rule == rule
    err = refused("GET", "", [("_type", "Observation,Patient"), ("code", "x")])  # not a Patient's
    assert err.reasons[0].rule == UNKNOWN
    assert refused("GET", "", [("_type", "Nonsense")]).reasons[0].rule == rules.UNKNOWN_TYPE
    assert (
        refused("POST", "_search", [("_type", "Condition"), ("_content", "HIV")]).reasons[0].rule
        == NOT_SERVED
    )


def test_every_route_of_a_search_is_checked() -> None:
    """GET, POST _search (its form fields arrive as the query), the Patient compartment, a
    conditional update/patch/delete's search, a batch entry."""
    assert refused("POST", "Condition/_search", [("code:text", "HIV")]).reasons[0].rule == MODIFIER
    assert refused("GET", "Patient/p1/Condition", [("code:not", "I10")]).reasons[0].rule == MODIFIER
    body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    assert refused("PUT", "Observation", [("PATIENT", "x")], body).reasons[0].rule == UNKNOWN
    assert refused("PATCH", "Observation", [("_filter", "x")], []).reasons[0].rule == NOT_SERVED
    assert refused("DELETE", "Observation", [("subject:identifier", "m")]).reasons[0].rule == MODIFIER
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/p1"}},
            {"request": {"method": "GET", "url": "Condition?patient=p1&code:below=B"}},
        ],
    }
    reason = refused("POST", "", [], bundle).reasons[0]
    assert reason.rule == MODIFIER and reason.en.startswith("Bundle.entry[1]: ")


def test_the_search_of_a_conditional_create_is_checked_wherever_it_is_set() -> None:
    """The If-None-Exist header (set by the pipeline) and a batch entry's ifNoneExist."""
    req = parse_request("POST", "Observation", [], {"resourceType": "Observation"})
    req.if_none_exist = {"identifier": ["lab|42"], "patient": ["x"]}  # a search the gateway reads
    with pytest.raises(GatewayError) as exc:
        req.if_none_exist = {"subject:identifier": ["MRN000009"]}
    reason = exc.value.reasons[0]
    assert reason.rule == MODIFIER and reason.en.startswith("If-None-Exist: ")
    assert "MRN000009" not in reason.en + reason.zh
    assert FhirRequest("POST", "create", "type", "Observation").if_none_exist == {}
    entry = {
        "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
        "request": {"method": "POST", "url": "Observation", "ifNoneExist": "_text=HIV"},
    }
    reason = refused("POST", "", [], {"resourceType": "Bundle", "type": "batch", "entry": [entry]}).reasons[0]
    assert reason.rule == NOT_SERVED and reason.en.startswith("Bundle.entry[0]: If-None-Exist: ")


@pytest.mark.parametrize("key", ["_count", "_sort", "_summary", "_total", "_elements", "_pretty"])
def test_a_single_valued_result_parameter_given_twice_is_refused(key: str) -> None:
    good = {"_count": "1", "_sort": "date", "_summary": "true", "_total": "none", "_elements": "id"}
    value = good.get(key, "true")
    assert refused("GET", "Observation", [(key, value), (key, value)]).reasons[0].rule == BAD


WEIRD_KEYS = [
    ":",
    "::",
    "patient:",
    ":Patient",
    ".",
    "..",
    "subject.",
    ".name",
    "_has:",
    "_has::::",
    "_has:Condition",
    "_has:Condition:patient:",
    "_has:Condition:patient:_has:",
    "subject:Patient.",
    "subject:Patient:Patient",
    "_include:iterate:x",
    "patient%3Ax",
    "a" * 5000,
    "患者",
    "subject\u200b",
    "ｐatient",
    "_sort:",
]


@pytest.mark.parametrize("key", WEIRD_KEYS, ids=range(len(WEIRD_KEYS)))
def test_a_malformed_key_is_a_400_never_a_crash(key: str) -> None:
    err = refused("GET", "Observation", [(key, "x")])
    assert err.reasons[0].rule.startswith("fhir.") and len(err.reasons[0].en) < 600
    refused("GET", "", [(key, "x")])
    with pytest.raises(GatewayError):
        check_search("Patient", {key: ["x"]})


def test_weird_result_values_are_a_400_never_a_crash() -> None:
    for key in ("_include", "_revinclude", "_sort", "_elements"):
        for value in ("", ":", "::", "*:*", "Observation:", ":subject", "Observation:*:Patient", ","):
            with pytest.raises(GatewayError):
                check_search("Observation", {key: [value]})
    check_search("Observation", {"_include": ["Observation:*"], "_revinclude": ["*"]})
