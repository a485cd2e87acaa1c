"""Search parameters the gateway does not understand never reach the upstream (I.4, issue 13 "Deliver"
4, first layer), through a real gateway in front of both real upstreams and with both engines.

Each parameter below is an oracle or a way around the patient-scoped checks on some server: a case
variant a lenient server reads as `patient` (`PATIENT=`), a reference by identifier that names a
patient the gateway never sees (`subject:identifier=<MRN>`), modifiers that select by graded content
in ways no grade can bound (`code:text=HIV`, `code:in=<ValueSet>`, `code:below=`), free text and
filters, a `_has` by code. Each gets a 400 OperationOutcome with its rule and clause I.4 that names only
the parameter sent, leaves one audit record, and is never forwarded (no upstream status in the record;
with a stand-in upstream, no request at all). The searches clinicians use still answer.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from gateway import rules
from gateway.app import create_app
from tests.conftest import auth, read_audit

pytestmark = pytest.mark.integration

ICD10 = "http://hl7.org/fhir/sid/icd-10"
MRN = "MRN000009"  # a synthetic patient's MRN: what a refusal must not echo back
UNKNOWN, NOT_SERVED = rules.SEARCH_UNKNOWN_PARAM, rules.SEARCH_PARAM_NOT_SERVED
MODIFIER, CHAIN, BAD = rules.SEARCH_MODIFIER_NOT_SERVED, rules.SEARCH_CHAIN_NOT_SERVED, rules.SEARCH_BAD_VALUE

#: (path after /fhir with {P} for the patient's id, the rule that refuses it)
REFUSED = [
    ("/Condition?PATIENT={P}", UNKNOWN),
    ("/Observation?SUBJECT=Patient/{P}", UNKNOWN),
    ("/Patient?_HAS:Condition:subject:code=B20", UNKNOWN),
    ("/Condition?nonsense=1&patient={P}", UNKNOWN),
    ("/Observation?_offset=20&patient={P}", UNKNOWN),
    (f"/Observation?subject:identifier={MRN}", MODIFIER),
    (f"/Observation?patient:identifier=urn:oid:2.16.156.emrguard.mrn%7C{MRN}", MODIFIER),
    ("/Observation?subject:patient=Patient/{P}", MODIFIER),
    ("/Patient?_id:not={P}&_count=50", MODIFIER),
    ("/Patient?_id:exact={P}", MODIFIER),
    (f"/Condition?patient={{P}}&code:not={ICD10}%7CI10", MODIFIER),
    (f"/Condition?patient={{P}}&code:below={ICD10}%7CB", MODIFIER),
    ("/Condition?patient={P}&code:in=http://example.org/ValueSet/hiv", MODIFIER),
    ("/Condition?patient={P}&code:text=HIV", MODIFIER),
    ("/Condition?patient={P}&_security:not=http://terminology.hl7.org/CodeSystem/v3-ActCode%7CHIV", MODIFIER),
    (f"/Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203%7CMR%7C{MRN}", MODIFIER),
    ("/Condition?patient={P}&_content=HIV", NOT_SERVED),
    ("/Condition?patient={P}&_text=HIV", NOT_SERVED),
    ("/Observation?_filter=subject%20eq%20Patient/{P}", NOT_SERVED),
    ("/Condition?_query=hiv-patients", NOT_SERVED),
    ("/Condition?_list=%24current-problems", NOT_SERVED),
    ("/Condition?patient={P}&_contained=true", NOT_SERVED),
    ("/Condition?patient={P}&_type=Patient", NOT_SERVED),
    ("/Condition?patient={P}&_sort=code", NOT_SERVED),
    ("/Patient?_has:Condition:patient:code=B20", CHAIN),
    (f"/Patient?_has:Condition:subject:code={ICD10}%7CB20&_id={{P}}", CHAIN),
    ("/DiagnosticReport?result.code=B20", CHAIN),
    ("/Observation?patient={P}&_count=lots", BAD),
    ("/Observation?patient={P}&_count=1&_count=1000", BAD),
    ("/Observation?patient={P}&subject:missing=maybe", BAD),
    ("?patient={P}", UNKNOWN),  # a system search without _type: the common parameters only
    ("/Patient/{P}/Condition?code:not=I10", MODIFIER),
]


def _rules_of(body: Any) -> list[str]:
    return [
        c["code"]
        for issue in (body or {}).get("issue") or []
        for c in (issue.get("details") or {}).get("coding") or []
    ]


def _cardiology(fhir_server: Any) -> str:
    patient = fhir_server.patients[3]
    assert fhir_server.departments[patient] == "cardiology"
    return patient.split("/", 1)[1]


async def _refusal(client: Any, resp: Any, rule: str, where: str, *secrets: str) -> dict[str, Any]:
    """A 400 OperationOutcome with the rule and clause I.4, its audit record, nothing forwarded; the
    answer names none of the values sent (the MRN, the codes probed for, the patient's id)."""
    text = await resp.text()
    body = json.loads(text)
    assert resp.status == 400 and body["resourceType"] == "OperationOutcome", (where, resp.status, text)
    codes = _rules_of(body)
    assert codes[0] == rule and "I.4" in codes, (where, codes)
    shown = text.replace(resp.headers["X-Request-Id"], "<request-id>").lower()
    for secret in (MRN, "HIV", "B20", *secrets):
        assert secret.lower() not in shown, (where, secret, text)
    record = read_audit(client.settings)[-1]
    assert record["request_id"] == resp.headers["X-Request-Id"], where
    assert record["status"] == 400 and record["reasons"][0]["rule"] == rule, (where, record)
    assert record["upstream_status"] is None, (where, record)  # never forwarded
    return record


@pytest.mark.parametrize("role", ["nurse", "physician"])
async def test_a_search_parameter_the_gateway_does_not_understand_is_refused(
    client: Any, idp: Any, fhir_server: Any, role: str
) -> None:
    p = _cardiology(fhir_server)
    token = idp.token(role, sub=f"{role}-oracles", dept="cardiology")
    for path, rule in REFUSED:
        url = "/fhir" + path.replace("{P}", p)
        resp = await client.get(url, headers=auth(token, "TREAT"))
        await _refusal(client, resp, rule, url, p)


async def test_a_refusal_names_the_parameter_sent_and_nothing_of_its_value(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    token = idp.token("nurse", sub="nurse-oracles", dept="cardiology")
    resp = await client.get(f"/fhir/Observation?subject:identifier={MRN}", headers=auth(token, "TREAT"))
    body = await resp.json(content_type=None)
    text = body["issue"][0]["details"]["text"]
    assert "subject:identifier" in text and MRN not in json.dumps(body, ensure_ascii=False)
    assert "按标识符引用" in text and "reference by identifier" in text  # zh + en


async def test_every_route_of_a_search_is_checked(client: Any, idp: Any, fhir_server: Any) -> None:
    """POST _search (its form), a batch entry, a conditional create's If-None-Exist, a conditional
    delete: each refused before the policy is asked and before anything is forwarded."""
    p = _cardiology(fhir_server)
    token = idp.token("physician", sub="dr-oracles", dept="cardiology")
    form = {**auth(token, "TREAT"), "Content-Type": "application/x-www-form-urlencoded"}
    resp = await client.post("/fhir/Condition/_search", data=f"patient={p}&code:text=HIV", headers=form)
    await _refusal(client, resp, MODIFIER, "_search form")
    resp = await client.post("/fhir/_search", data="_type=Condition&_content=HIV", headers=form)
    await _refusal(client, resp, NOT_SERVED, "system _search form")
    # HAPI's stored-search page parameters in a form, where the paging check (URL only) does not look.
    resp = await client.post("/fhir/Condition/_search", data="_getpages=0b1e&_getpagesoffset=2", headers=form)
    await _refusal(client, resp, UNKNOWN, "_getpages in a form")
    resp = await client.post("/fhir/Condition/_search", data=f"patient={p}&_format=xml", headers=form)
    assert resp.status == 406, await resp.text()
    fhir_json = {**auth(token, "TREAT"), "Content-Type": "application/fhir+json"}
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{p}"}},
            {"request": {"method": "GET", "url": f"Observation?subject:identifier={MRN}"}},
        ],
    }
    resp = await client.post("/fhir", data=json.dumps(batch), headers=fhir_json)
    await _refusal(client, resp, MODIFIER, "batch entry")
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{p}"},
    }
    headers = {**fhir_json, "If-None-Exist": f"subject:identifier={MRN}"}
    resp = await client.post("/fhir/Observation", data=json.dumps(obs), headers=headers)
    await _refusal(client, resp, MODIFIER, "If-None-Exist")
    resp = await client.delete(f"/fhir/Observation?PATIENT={p}", headers=auth(token, "TREAT"))
    await _refusal(client, resp, UNKNOWN, "conditional delete")


async def _mrn_of(fhir_server: Any, patient: str) -> str:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{fhir_server.base}/Patient/{patient}", headers={"Accept": "application/fhir+json"}) as r,
    ):
        body = await r.json(content_type=None)
    return str(body["identifier"][0]["value"])


async def test_the_searches_clinicians_use_still_answer(client: Any, idp: Any, fhir_server: Any) -> None:
    p = _cardiology(fhir_server)
    mrn = await _mrn_of(fhir_server, p)
    token = idp.token("physician", sub="dr-everyday", dept="cardiology")
    answered = [
        f"/Observation?patient={p}&code=http://loinc.org%7C8867-4&date=ge2000-01-01&_sort=-date&_count=10",
        f"/Encounter?subject=Patient/{p}&status=finished",
        f"/Patient?identifier={quote(mrn)}",
        f"/Condition?patient={p}&_include=Condition:subject",
        f"/Condition?subject={p}&clinical-status:missing=true",
        f"/Observation?subject={p}&_count=100",  # bench/run.py's search100
        f"/Observation?subject:Patient={p}&status:not=entered-in-error&_count=5",
        f"/Patient?_id={p}&_revinclude=Condition:subject",
        f"/MedicationRequest?patient={p}&_count=5",
        f"/Observation?patient={p}&_summary=true&_elements=code&_total=accurate",
    ]
    for path in answered:
        resp = await client.get("/fhir" + path, headers=auth(token, "TREAT"))
        body = await resp.json(content_type=None)
        assert resp.status == 200 and body["resourceType"] == "Bundle", (path, resp.status, body)
        assert read_audit(client.settings)[-1]["upstream_status"] == 200, path
    # Searches the allow-list lets through for the policy to decide (the server may not serve them:
    # Medplum's router ignores chains and _has, serves no compartment), and a POST _search form.
    for path in (
        f"/Patient/{p}/Observation?_count=5",
        f"?_type=Observation&patient={p}&_count=5",
        f"/Observation?subject:Patient.identifier={quote(mrn)}&_count=5",
        f"/Patient?_has:Observation:patient:date=ge2000-01-01&_id={p}",
    ):
        resp = await client.get("/fhir" + path, headers=auth(token, "TREAT"))
        body = await resp.json(content_type=None)
        assert not any(r.startswith("fhir.search-") for r in _rules_of(body)), (path, body)
    form = {**auth(token, "TREAT"), "Content-Type": "application/x-www-form-urlencoded"}
    resp = await client.post("/fhir/Observation/_search", data=f"patient={p}&_count=5", headers=form)
    assert resp.status == 200, await resp.text()


async def test_a_sorted_search_pages_through_the_gateways_cursor(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    """`_cursor` is the gateway's own parameter: consumed before the parse, its page is the search
    again (allow-listed again) and answers."""
    p = _cardiology(fhir_server)
    token = idp.token("nurse", sub="nurse-pages", dept="cardiology")
    resp = await client.get(
        f"/fhir/Observation?patient={p}&_sort=-date&_count=1", headers=auth(token, "TREAT")
    )
    body = await resp.json(content_type=None)
    assert resp.status == 200, body
    nxt = next(link["url"] for link in body.get("link") or [] if link["relation"] == "next")
    assert "_cursor=" in nxt
    resp = await client.get("/fhir?" + nxt.split("?", 1)[1], headers=auth(token, "TREAT"))
    page = await resp.json(content_type=None)
    assert resp.status == 200 and page["resourceType"] == "Bundle", page


async def test_nothing_refused_reaches_the_upstream(
    aiohttp_client: Any, make_settings: Any, idp: Any, recording: Any
) -> None:
    """Counted on a stand-in upstream: not one request for any refused search (the parse refuses it,
    before the care lookups and the decision); the one search the gateway understands arrives."""
    recording.reply = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    settings = make_settings(recording.base)
    client = await aiohttp_client(create_app(settings))
    client.settings = settings
    nurse = idp.token("nurse", sub="nurse-counted", dept="cardiology")
    for path, rule in REFUSED:
        url = "/fhir" + path.replace("{P}", "p1")
        resp = await client.get(url, headers=auth(nurse, "TREAT"))
        await _refusal(client, resp, rule, url)
    assert recording.urls == []
    officer = idp.token("records_officer", sub="rec-counted")
    resp = await client.get("/fhir/Organization?name=x&_count=5", headers=auth(officer, "TREAT"))
    assert resp.status == 200, await resp.text()
    # (the gateway may ask for more than _count: it owns paging, gateway/paging.py)
    assert len(recording.urls) == 1 and "/Organization?name=x&_count=" in recording.urls[0]
