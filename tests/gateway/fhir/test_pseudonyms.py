"""Research pseudonyms (I.4, issue "nothing leaks" class 6): reversible per study, every id of an
answer replaced, pseudonyms mapped back inside the gateway (gateway/fhir/pseudonyms.py)."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.fhir.filter import apply_verdicts
from gateway.fhir.pseudonyms import (
    ONE_WAY,
    PSEUDONYMISED_PURPOSES,
    UNKNOWN,
    Pseudonymiser,
    study_of,
    unmask,
    unmask_entries,
)
from gateway.fhir.request import parse_request
from gateway.fhir.resources import collect

SECRET = "unit-test-secret-0123456789abcdef0123"
KEYS = Pseudonymiser(SECRET)
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
UUID = "3f2b6c1e-8a4d-4c2e-9b7a-5d1e0f2a3b4c"
VERSION_UUID = "7a1c0e3b-2d4f-4e6a-8b9c-0d1e2f3a4b5c"
PSEUDO: dict[str, Any] = {"keep": True, "pseudonymise": True}


def study(name: str = "agreement:IRB-2026-017") -> Pseudonymiser:
    return KEYS.for_study(name)


# --- the pseudonym -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rid",
    [
        "1",
        "1000",
        "99999999999999999999",
        UUID,
        "p1",
        "example-patient",
        "a" * 28,
        "A.b-c.0123456789",
        "00042",
    ],
)
def test_a_pseudonym_is_a_fhir_id_that_maps_back_to_its_id(rid: str) -> None:
    ps = study()
    p = ps("Patient", rid)
    assert FHIR_ID.fullmatch(p) and p.startswith("ps-") and len(p) <= 64
    assert re.fullmatch(r"ps-[a-z2-7]+", p)  # lower-case base32, no padding
    assert study().decode("Patient", p) == rid  # another request of the study: the same key
    assert study()("Patient", rid) == p  # deterministic: the same record, the same pseudonym


def test_a_uuid_id_fits_and_so_does_its_version() -> None:
    ps = study()
    assert len(ps("Observation", UUID)) == 56
    v = ps.version("Observation", UUID, VERSION_UUID)
    assert len(v) <= 64 and ps.decode_version("Observation", UUID, v) == VERSION_UUID


@pytest.mark.parametrize("rid", ["a" * 29, "x" * 64, f"{UUID}-{UUID[:27]}"])
def test_an_id_too_long_to_encode_gets_a_one_way_pseudonym_that_cannot_be_read_back(rid: str) -> None:
    """More than 28 characters that are neither a UUID nor a number do not fit in 64 (16 bytes of
    synthetic IV, base32): the pseudonym is then a keyed hash, still per study and typed."""
    ps = study()
    p = ps("Observation", rid)
    assert p.startswith("ph-") and FHIR_ID.fullmatch(p) and len(p) <= 64
    assert p == study()("Observation", rid) != study("operator:x")("Observation", rid)
    assert p != ps("Patient", rid)
    with pytest.raises(GatewayError) as err:
        unmask("GET", f"Observation/{p}", [], study())
    assert err.value.status == 400 and err.value.reasons[0].rule == ONE_WAY
    assert err.value.reasons[0].clause == "I.4"


def test_pseudonyms_are_typed_and_per_study() -> None:
    a, b = study("agreement:A"), study("agreement:B")
    assert a("Patient", "7") != a("Observation", "7")  # typed: Type/id, not the bare id
    assert a("Patient", "7") != b("Patient", "7")  # studies cannot be linked
    assert Pseudonymiser(SECRET + "x").for_study("agreement:A")("Patient", "7") != a("Patient", "7")
    with pytest.raises(ValueError):
        b.decode("Patient", a("Patient", "7"))  # another study's: fails authentication
    with pytest.raises(ValueError):
        a.decode("Observation", a("Patient", "7"))  # another type's
    tampered = a("Patient", "7")[:-1] + ("a" if not a("Patient", "7").endswith("a") else "b")
    with pytest.raises(ValueError):
        a.decode("Patient", tampered)


def test_only_hresch_is_pseudonymised_as_the_policy_data_says() -> None:
    data = json.loads(
        (Path(__file__).parents[3] / "opa_policies/emr/config/fields/data.json").read_text(encoding="utf-8")
    )
    assert PSEUDONYMISED_PURPOSES == {p for p, prof in data["profiles"].items() if prof.get("pseudonymise")}


# --- the study ---------------------------------------------------------------------------------


def grant(agreement: str | None, start: str, end: str, **kw: Any) -> dict[str, Any]:
    return {"id": agreement or "g", "kind": "export", "operator": "res-1", "purposes": ["HRESCH"],
            "start": start, "end": end, "agreement": agreement, **kw}  # fmt: skip


def test_the_study_is_the_agreement_of_the_grant_in_force_else_the_researcher() -> None:
    now = datetime(2026, 12, 1, 8, tzinfo=UTC)
    old = grant("IRB-2025-001", "2025-01-01T00:00:00Z", "2026-12-01T08:00:00Z")  # ended (end exclusive)
    current = grant("IRB-2026-017", "2026-11-01T00:00:00Z", "2027-11-01T00:00:00Z")
    newer = grant("IRB-2026-020", "2026-11-15T00:00:00+08:00", "2027-01-01T00:00:00Z")
    other_purpose = grant("VA-1", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", purposes=["HOPERAT"])
    no_agreement = grant(None, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
    assert study_of("res-1", [old, current], "HRESCH", now) == "agreement:IRB-2026-017"
    assert study_of("res-1", [current, newer], "HRESCH", now) == "agreement:IRB-2026-020"  # began last
    assert study_of("res-1", [old, other_purpose, no_agreement], "HRESCH", now) == "operator:res-1"
    assert study_of("res-1", [], "HRESCH", now) == "operator:res-1"
    assert (
        study_of("res-1", [grant("IRB-X", "bad", "2027-01-01T00:00:00Z")], "HRESCH", now) == "operator:res-1"
    )


# --- requests: pseudonyms mapped back ------------------------------------------------------------


def test_every_spelling_of_a_pseudonymous_id_is_mapped_back_and_marked() -> None:
    ps = study()
    pat, obs, enc = ps("Patient", "1000"), ps("Observation", UUID), ps("Encounter", "55")
    v = ps.version("Observation", UUID, "3")
    cases = [
        (f"Patient/{pat}", [], "Patient/1000", []),
        (f"Patient/{pat}/$everything", [], "Patient/1000/$everything", []),
        (f"Patient/{pat}/Observation", [], "Patient/1000/Observation", []),
        (f"Patient/{pat}/_history", [], "Patient/1000/_history", []),
        (f"Observation/{obs}/_history/{v}", [], f"Observation/{UUID}/_history/3", []),
        ("Observation", [("subject", f"Patient/{pat}")], "Observation", [("subject", "Patient/1000")]),
        ("Observation", [("patient", pat)], "Observation", [("patient", "1000")]),
        ("Observation", [("subject:Patient", pat)], "Observation", [("subject:Patient", "1000")]),
        (
            "Observation",
            [("subject", f"http://gw.example/fhir/Patient/{pat}")],
            "Observation",
            [("subject", "http://gw.example/fhir/Patient/1000")],
        ),
        ("Observation", [("encounter", enc)], "Observation", [("encounter", "55")]),
        ("Observation", [("_id", f"{obs},{obs}")], "Observation", [("_id", f"{UUID},{UUID}")]),
        ("", [("_id", pat)], "", [("_id", "1000")]),  # a system search: the pseudonym says its type
    ]
    for path, query, real_path, real_query in cases:
        out = unmask("GET", path, query, ps)
        assert (out.path, out.query) == (real_path, real_query), path
        assert out.seen and all(out.ids.values()), (path, out.ids)
        assert not any(p in json.dumps(out.ids) for p in (pat, obs, enc))


def test_real_ids_are_marked_real_and_other_values_left_alone() -> None:
    ps = study()
    out = unmask(
        "GET", "Observation", [("subject", "Patient/1000"), ("code", "ps-notacode"), ("_count", "5")], ps
    )
    assert out.query == [("subject", "Patient/1000"), ("code", "ps-notacode"), ("_count", "5")]
    assert out.ids == {"Patient/1000": False} and not out.seen
    assert unmask("GET", "Patient/1000", [], ps).ids == {"Patient/1000": False}
    # Without a study (no pseudonymised purpose) nothing is mapped: a `ps-` id is an ordinary id.
    plain = unmask("GET", f"Patient/{ps('Patient', '1')}", [], None)
    assert plain.path == f"Patient/{ps('Patient', '1')}" and plain.ids == {plain.path: False}


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("Patient/{other}", []),
        ("Observation", [("subject", "Patient/{other}")]),
        ("Observation", [("patient", "{other}")]),
        ("Patient", [("_id", "{other}")]),
        ("Observation/{patient}", []),  # a Patient's pseudonym named as an Observation
        ("Patient/ps-aaaa", []),
        ("Patient/ps-NOTBASE32", []),
    ],
)
def test_a_pseudonym_of_another_study_or_type_is_refused_as_unknown(path: str, query: list[Any]) -> None:
    mine, theirs = study("agreement:A"), study("agreement:B")
    values = {"other": theirs("Patient", "1000"), "patient": mine("Patient", "1000")}
    with pytest.raises(GatewayError) as err:
        unmask("GET", path.format(**values), [(k, v.format(**values)) for k, v in query], mine)
    reason = err.value.reasons[0]
    assert err.value.status == 400 and reason.rule == UNKNOWN and reason.clause == "I.4"
    assert "1000" not in reason.en + reason.zh


def test_batch_entries_are_mapped_back_in_the_body_that_is_sent() -> None:
    ps = study()
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{ps('Patient', '1000')}"}},
            {"request": {"method": "GET", "url": f"Observation?subject=Patient/{ps('Patient', '1000')}"}},
            {"request": {"method": "GET", "url": "Observation?subject=Patient/2000"}},
        ],
    }
    named = unmask_entries(body, ps)
    assert [e["request"]["url"] for e in body["entry"]] == [
        "Patient/1000",
        "Observation?subject=Patient%2F1000",
        "Observation?subject=Patient/2000",
    ]
    assert [n.ids for n in named] == [{"Patient/1000": True}, {"Patient/1000": True}, {"Patient/2000": False}]
    # (searches inside a batch are refused at parse, gateway/fhir/request.py; the mapping-back of
    # their parameters still matters for the policy, which sees the decided entries)


def test_the_policy_input_names_every_id_and_whether_it_was_a_pseudonym() -> None:
    req = parse_request("GET", "Patient/1000", [])
    req.ids = {"Patient/1000": True}
    assert req.to_policy()["target"]["ids"] == {"Patient/1000": True}


# --- answers: every id pseudonymised -----------------------------------------------------------


def medplum_meta(version: str) -> dict[str, Any]:
    return {
        "versionId": version,
        "lastUpdated": "2026-12-01T08:00:00.000Z",
        "source": "http://upstream.example/app",
        "author": {"reference": "Practitioner/dr-li-0001"},
        "project": "a1b2c3d4-0000-4000-8000-000000000001",
        "compartment": [{"reference": "Patient/1000"}],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}],
    }


def research_page() -> dict[str, Any]:
    base = "http://gw.example/fhir"
    patient = {
        "resourceType": "Patient",
        "id": "1000",
        "meta": medplum_meta("v-p-1"),
        "identifier": [{"system": "urn:oid:2.16.156.emrguard.mrn", "value": "MRN000003"}],
        "gender": "female",
        "link": [{"other": {"reference": "Patient/1001"}, "type": "seealso"}],
        "generalPractitioner": [{"reference": "Practitioner/dr-li-0001", "display": "李医生"}],
        "extension": [{"url": "http://example.org/mrn", "valueIdentifier": {"value": "MRN000003"}}],
    }
    observation = {
        "resourceType": "Observation",
        "id": UUID,
        "meta": medplum_meta(VERSION_UUID),
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"{base}/Patient/1000/_history/2", "display": "洪玉英"},
        "encounter": {"reference": "Encounter/enc-77"},
        "performer": [{"identifier": {"value": "EMP-9"}, "display": "李医生"}],
        "basedOn": [{"reference": "ServiceRequest?identifier=ORD-5"}],
        "derivedFrom": [{"reference": "#c1"}],
        "contained": [{"resourceType": "Media", "id": "c1", "status": "completed",
                       "content": {"url": "Binary/bin-42", "contentType": "image/png"}}],
    }  # fmt: skip
    return {
        "resourceType": "Bundle",
        "id": "search-3f1a",
        "type": "history",
        "link": [{"relation": "self", "url": f"{base}/Observation?subject=Patient/1000&_id={UUID}"}],
        "entry": [
            {
                "fullUrl": f"{base}/Patient/1000",
                "resource": patient,
                "request": {"method": "PUT", "url": "Patient/1000/_history/v-p-1", "ifMatch": 'W/"v-p-0"'},
                "response": {"status": "200", "location": "Patient/1000/_history/v-p-1", "etag": 'W/"v-p-1"'},
            },
            {
                "fullUrl": f"{base}/Observation/{UUID}",
                "resource": observation,
                "request": {"method": "POST", "url": "Observation", "ifNoneExist": "identifier=ACC-1"},
                "response": {"status": "201", "location": f"{base}/Observation/{UUID}/_history/{VERSION_UUID}"},
            },
            {"response": {"status": "404", "outcome": {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-found",
                 "diagnostics": "HAPI-2001: Resource Encounter/enc-77 is not known"}]}}},
        ],
    }  # fmt: skip


REAL = ("1000", "1001", UUID, VERSION_UUID, "v-p-1", "v-p-0", "enc-77", "dr-li-0001", "bin-42", "MRN000003",
        "ACC-1", "EMP-9", "ORD-5", "洪玉英", "李医生", "search-3f1a", "a1b2c3d4-0000", "upstream.example")  # fmt: skip


def test_a_research_answer_holds_no_real_id_anywhere() -> None:
    body, ps = research_page(), study()
    slots = collect(body)
    result = apply_verdicts(body, slots, [PSEUDO] * len(slots), ps)
    text = json.dumps(body, ensure_ascii=False)
    assert [r for r in REAL if r in text] == []
    patient, obs = body["entry"][0]["resource"], body["entry"][1]["resource"]
    assert patient["id"] == ps("Patient", "1000")
    assert patient["link"][0]["other"]["reference"] == f"Patient/{ps('Patient', '1001')}"
    assert obs["subject"] == {
        "reference": f"http://gw.example/fhir/Patient/{ps('Patient', '1000')}/_history/{ps.version('Patient', '1000', '2')}"
    }
    assert obs["encounter"]["reference"] == f"Encounter/{ps('Encounter', 'enc-77')}"
    assert obs["meta"]["versionId"] == ps.version("Observation", UUID, VERSION_UUID)
    assert set(obs["meta"]) <= {"versionId", "lastUpdated", "security"}
    assert obs["derivedFrom"] == [{"reference": "#c1"}]  # a contained resource's local id stays
    assert obs["contained"][0]["content"]["url"] == f"Binary/{ps('Binary', 'bin-42')}"
    assert obs["performer"][0]["extension"][0]["valueCode"] == "masked"  # nothing left of it
    assert "reference" not in obs["basedOn"][0]  # a conditional reference names an identifier
    entry = body["entry"][0]
    assert entry["fullUrl"] == f"http://gw.example/fhir/Patient/{ps('Patient', '1000')}"
    assert entry["request"] == {
        "method": "PUT",
        "url": f"Patient/{ps('Patient', '1000')}/_history/{ps.version('Patient', '1000', 'v-p-1')}",
    }
    assert entry["response"]["etag"] == f'W/"{ps.version("Patient", "1000", "v-p-1")}"'
    assert body["entry"][1]["request"] == {"method": "POST", "url": "Observation"}
    assert ps("Encounter", "enc-77") in body["entry"][2]["response"]["outcome"]["issue"][0]["diagnostics"]
    # The audit names the real records and patients (II.2).
    assert result.disclosed[:2] == ["Patient/1000", f"Observation/{UUID}"]
    assert "Patient/1000" in result.disclosed_patients


def test_what_comes_back_reads_back_to_the_same_record() -> None:
    body, ps = research_page(), study()
    slots = collect(body)
    apply_verdicts(body, slots, [PSEUDO] * len(slots), ps)
    for url in (body["entry"][0]["fullUrl"], body["entry"][1]["resource"]["subject"]["reference"]):
        path = url.split("/fhir/", 1)[1]
        assert unmask("GET", path, [], study()).path in ("Patient/1000", "Patient/1000/_history/2")
    self_link = body["link"][0]["url"]
    query = [tuple(p.split("=", 1)) for p in self_link.split("?", 1)[1].split("&")]
    from urllib.parse import unquote

    real = unmask("GET", "Observation", [(k, unquote(v)) for k, v in query], study())
    assert real.query == [("subject", "Patient/1000"), ("_id", UUID)]


def test_a_stored_bundle_and_its_entries_are_pseudonymised_once() -> None:
    ps = study()
    doc = {
        "resourceType": "Bundle",
        "id": "doc-1",
        "type": "collection",
        "entry": [{"fullUrl": "http://gw.example/fhir/Patient/1000",
                   "resource": {"resourceType": "Patient", "id": "1000"}}],
    }  # fmt: skip
    body = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"fullUrl": "x/Bundle/doc-1", "resource": doc}],
    }
    slots = collect(body)
    apply_verdicts(body, slots, [PSEUDO] * len(slots), ps)
    inner = doc["entry"][0]
    assert inner["resource"]["id"] == ps("Patient", "1000") == inner["fullUrl"].rsplit("/", 1)[1]
    assert study().decode("Patient", inner["resource"]["id"]) == "1000"


def test_an_upstream_outcome_alone_names_no_real_id() -> None:
    ps = study()
    ps.decode("Observation", ps("Observation", "123"))  # the request named Observation/ps-… (mapped)
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-found", "diagnostics": "Resource Observation/123 is not known",
         "details": {"text": "id 123 not found"}}]}  # fmt: skip
    apply_verdicts(body, collect(body), [], ps)
    assert "123" not in json.dumps(body)


def test_non_research_answers_are_untouched() -> None:
    body = research_page()
    sent = copy.deepcopy(body)
    slots = collect(body)
    apply_verdicts(body, slots, [{"keep": True}] * len(slots), None)
    assert body == sent
    apply_verdicts(body, slots, [{"keep": True}] * len(slots), study())  # no verdict pseudonymises
    assert body == sent


def test_headers_are_pseudonymised() -> None:
    ps = study()
    headers = {
        "Location": "http://gw.example/fhir/Observation/123/_history/4",
        "Content-Location": "http://gw.example/fhir/Observation/123/_history/4",
        "ETag": 'W/"4"',
        "Last-Modified": "Tue, 01 Dec 2026 08:00:00 GMT",
    }
    out = ps.mask_headers(headers)
    assert "123" not in json.dumps(out) and '"4"' not in out["ETag"]
    assert out["ETag"] == f'W/"{ps.version("Observation", "123", "4")}"'
    assert out["Last-Modified"] == headers["Last-Modified"]
    read = ps.mask_headers({"ETag": 'W/"4"'}, ("Observation", "123"))
    assert read == {"ETag": out["ETag"]}
    assert ps.mask_headers({"ETag": 'W/"4"'}) == {}  # a version of nothing known: not released
