"""Hostile researchers and students against both real upstreams and both engines (issue "nothing
leaks", class 6): research and teaching without re-identification.

A researcher (HRESCH) must not find a real person by who they are (identifier, name, phone,
address, exact birth date) nor by a real id, and what she receives must hold no real id at all —
judged by content: every id, version, identifier value, name, phone and address of the records
seeded here, anywhere in the body or the headers. What she receives can be read back through the
gateway (pseudonyms are mapped back inside it), one study's pseudonyms are not another's, and the
audit record names the real records, never a pseudonym (II.2).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import pytest

from tests.conftest import auth, read_audit
from tests.hostile.conftest import stored

pytestmark = pytest.mark.integration

NAME, FAMILY, GIVEN = "司马研究", "司马", "研究"
PHONE = "13912345678"
CITY = "研究测试市"
BIRTH = "1980-01-02"
MARKER_SYSTEM = "https://emrguard.example/fhir/CodeSystem/research-test"


def rules(body: Any) -> set[str]:
    return {
        c["code"]
        for i in (body or {}).get("issue", [])
        for c in (i.get("details") or {}).get("coding", [])
        if c["system"].endswith("/rule")
    }


def clauses(body: Any) -> set[str]:
    return {
        c["code"]
        for i in (body or {}).get("issue", [])
        for c in (i.get("details") or {}).get("coding", [])
        if c["system"].endswith("-clause")
    }


async def seed(fhir_server: Any) -> dict[str, Any]:
    """A patient with every kind of direct identifier, a practitioner, an encounter and an
    observation with a code of its own (to search by content)."""
    tag = uuid.uuid4().hex[:10]
    mrn = f"RES-MRN-{tag}"
    doctor = await stored(fhir_server, {"resourceType": "Practitioner", "name": [{"text": "研究医生"}]})
    patient = await stored(
        fhir_server,
        {
            "resourceType": "Patient",
            "identifier": [
                {"system": "urn:oid:2.16.156.emrguard.mrn", "value": mrn},
                {"system": "urn:oid:2.16.156.emrguard.national-id", "value": f"110101198001020{tag[:3]}"},
            ],
            "name": [{"text": NAME, "family": FAMILY, "given": [GIVEN]}],
            "telecom": [{"system": "phone", "value": PHONE}],
            "address": [{"text": f"{CITY}一路1号", "city": CITY}],
            "gender": "female",
            "birthDate": BIRTH,
        },
    )
    subject = {"reference": f"Patient/{patient['id']}", "display": NAME}
    encounter = await stored(
        fhir_server,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
            "participant": [
                {"individual": {"reference": f"Practitioner/{doctor['id']}", "display": "研究医生"}}
            ],
        },
    )
    observation = await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "identifier": [{"system": "urn:oid:2.16.156.emrguard.accession", "value": f"ACC-{tag}"}],
            "code": {"coding": [{"system": MARKER_SYSTEM, "code": tag}]},
            "subject": subject,
            "encounter": {"reference": f"Encounter/{encounter['id']}"},
            "performer": [{"reference": f"Practitioner/{doctor['id']}", "display": "研究医生"}],
            "valueQuantity": {"value": 72, "unit": "/min"},
        },
    )
    records = {"Patient": patient, "Practitioner": doctor, "Encounter": encounter, "Observation": observation}
    return {
        "tag": tag,
        "mrn": mrn,
        "records": records,
        "ids": {r["id"] for r in records.values()},
        "versions": {str(r["meta"]["versionId"]) for r in records.values()},
        "texts": {mrn, patient["identifier"][1]["value"], f"ACC-{tag}", NAME, PHONE, CITY, BIRTH, "研究医生"},
    }


def leaks(world: dict[str, Any], body: Any, headers: Any = None) -> set[str]:
    """The real ids, long versions and identifying texts of the seeded records found in an answer.
    A numeric id (HAPI) counts where an id stands, not inside a longer number or a timestamp."""
    text = (
        json.dumps(body, ensure_ascii=False)
        + "\n"
        + "\n".join(f"{k}: {v}" for k, v in (headers or {}).items())
    )
    text += "\n" + unquote(text)  # `Patient%2F<id>` names the id too
    found = {t for t in world["texts"] if t in text}
    for rid in world["ids"] | {v for v in world["versions"] if len(v) >= 8}:
        if re.search(rf"(?<![0-9A-Za-z\-.]){re.escape(rid)}(?![0-9A-Za-z\-.])", text):
            found.add(rid)
    return found


async def ask(client: Any, token: str, path: str, purpose: str = "HRESCH") -> tuple[int, Any, Any]:
    resp = await client.get(f"/fhir/{path}", headers=auth(token, purpose))
    body = await resp.json(content_type=None)
    record = read_audit(client.settings)[-1]
    assert record["request_id"] == resp.headers["X-Request-Id"]  # every attempt has its record
    return resp.status, body, resp.headers


async def grant(client: Any, idp: Any, operator: str, **fields: Any) -> None:
    now = datetime.now(UTC)
    body = {
        "operator": operator,
        "start": (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "end": (now + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
        "scope": {},
        **fields,
    }
    officer = idp.token("records_officer", sub="u-rec-research")
    resp = await client.post("/admin/grants", json=body, headers={"Authorization": f"Bearer {officer}"})
    assert resp.status == 201, await resp.text()


def entries_of(body: Any, rtype: str) -> list[dict[str, Any]]:
    return [e for e in body.get("entry") or [] if (e.get("resource") or {}).get("resourceType") == rtype]


async def found_by_content(client: Any, token: str, world: dict[str, Any]) -> dict[str, Any]:
    status, body, headers = await ask(
        client, token, f"Observation?code={quote(MARKER_SYSTEM)}%7C{world['tag']}"
    )
    assert status == 200, body
    (entry,) = entries_of(body, "Observation")
    return {"body": body, "headers": headers, "entry": entry, "resource": entry["resource"]}


# --- 1. no search by who the patient is, no real id ------------------------------------------------


def identifying(world: dict[str, Any]) -> list[str]:
    real = world["records"]["Patient"]["id"]
    obs = world["records"]["Observation"]["id"]
    return [
        f"Patient?identifier={world['mrn']}",
        f"Patient?identifier=urn:oid:2.16.156.emrguard.mrn%7C{world['mrn']}",
        f"Patient?name={quote(NAME)}",
        f"Patient?family={quote(FAMILY)}",
        f"Patient?given={quote(GIVEN)}",
        f"Patient?phone={PHONE}",
        f"Patient?telecom={PHONE}",
        f"Patient?address-city={quote(CITY)}",
        f"Patient?address={quote(CITY)}",
        f"Patient?birthdate={BIRTH}",
        f"Patient?birthdate=ge{BIRTH}&birthdate=le{BIRTH}",
        f"Observation?identifier=ACC-{world['tag']}",
        f"Observation?subject=Patient/{real}",
        f"Observation?patient={real}",
        f"Observation?subject:Patient={real}",
        f"Patient?_id={real}",
        f"Patient/{real}",
        f"Patient/{real}/_history",
        f"Patient/{real}/Observation",
        f"Patient/{real}/$everything",
        f"Observation/{obs}",
        f"Observation?encounter=Encounter/{world['records']['Encounter']['id']}",
    ]


async def test_a_researcher_cannot_find_a_person_by_who_they_are(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    world = await seed(fhir_server)
    token = idp.token("researcher", sub="res-hostile")
    for path in identifying(world):
        status, body, headers = await ask(client, token, path)
        assert status == 403, (path, status, body)
        assert rules(body) & {"search.identifying", "pseudonym.real-id"}, (path, rules(body))
        assert "I.4" in clauses(body), path
        assert not leaks(world, body, headers) - set(path.split("/") + path.split("=")), path
    # Chains and _has that end in an identifier: refused too (also as side channels, or unknown links).
    for path in (
        f"Observation?subject.identifier={world['mrn']}",
        f"Observation?subject:Patient.name={quote(NAME)}",
        f"Observation?subject:identifier={world['mrn']}",
        f"Patient?_has:Observation:subject:identifier=ACC-{world['tag']}",
    ):
        status, body, _ = await ask(client, token, path)
        assert status in (400, 403) and "I.4" in clauses(body), (path, status, body)


async def test_a_student_cannot_find_a_person_by_who_they_are(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    world = await seed(fhir_server)
    await grant(client, idp, "stu-research", kind="rotation", dept="cardiology", purposes=["TRAIN"])
    token = idp.token("student", sub="stu-research", dept="cardiology")
    for path in (
        f"Patient?identifier={world['mrn']}",
        f"Patient?name={quote(NAME)}",
        f"Patient?phone={PHONE}",
        f"Patient?birthdate={BIRTH}",
    ):
        status, body, _ = await ask(client, token, path, purpose="TRAIN")
        assert status == 403 and rules(body) == {"search.identifying"}, (path, body)
        assert "I.4" in clauses(body)
    # The year is what a student is shown, and may be searched.
    status, body, _ = await ask(client, token, "Patient?birthdate=1980&_count=5", purpose="TRAIN")
    assert "search.identifying" not in rules(body), body


# --- 2. what comes back holds no real id, and reads back --------------------------------------------


async def test_a_research_answer_holds_no_real_id_and_reads_back(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    world = await seed(fhir_server)
    token = idp.token("researcher", sub="res-hostile")
    first = await found_by_content(client, token, world)
    assert not leaks(world, first["body"], first["headers"]), leaks(world, first["body"], first["headers"])
    obs = first["resource"]
    assert obs["id"].startswith("ps-") and obs["meta"]["versionId"].startswith("ps-")
    assert obs["subject"]["reference"].startswith("Patient/ps-")
    assert obs["encounter"]["reference"].startswith("Encounter/ps-")
    assert obs["performer"][0]["reference"].startswith("Practitioner/ps-")
    assert first["entry"]["fullUrl"].endswith(f"/Observation/{obs['id']}")

    def same(a: dict[str, Any], b: dict[str, Any]) -> None:
        for key in ("id", "subject", "encounter", "performer", "code", "valueQuantity"):
            assert a.get(key) == b.get(key), key
        assert a["meta"]["versionId"] == b["meta"]["versionId"]

    # The fullUrl, read through the gateway: the same pseudonymised record.
    status, again, headers = await ask(client, token, first["entry"]["fullUrl"].split("/fhir/", 1)[1])
    assert status == 200, again
    same(again, obs)
    assert not leaks(world, again)
    # By the version it names, and by searches naming its pseudonyms.
    status, version, _ = await ask(
        client, token, f"Observation/{obs['id']}/_history/{obs['meta']['versionId']}"
    )
    assert status == 200, version
    same(version, obs)
    for path in (
        f"Observation?{obs['subject']['reference'].replace('Patient/', 'subject=Patient/')}",
        f"Observation?patient={obs['subject']['reference'].split('/')[1]}",
        f"Observation?_id={obs['id']}",
        f"Observation?encounter={obs['encounter']['reference']}",
    ):  # (compartment searches: neither upstream serves them; their pseudonyms map back alike)
        status, body, headers = await ask(client, token, path)
        assert status == 200, (path, body)
        (entry,) = entries_of(body, "Observation")
        same(entry["resource"], obs)
        assert not leaks(world, body, headers), (path, leaks(world, body, headers))
    # The patient it references: pseudonymised the same way, nothing identifying.
    status, patient, _ = await ask(client, token, obs["subject"]["reference"])
    assert status == 200, patient
    assert f"Patient/{patient['id']}" == obs["subject"]["reference"]
    assert not leaks(world, patient) and patient["birthDate"] == "1980"
    status, encounter, _ = await ask(client, token, obs["encounter"]["reference"])
    assert status == 200 and encounter["subject"]["reference"] == obs["subject"]["reference"]
    assert not leaks(world, encounter)


async def test_the_audit_names_real_ids_never_pseudonyms(client: Any, idp: Any, fhir_server: Any) -> None:
    world = await seed(fhir_server)
    token = idp.token("researcher", sub="res-hostile")
    obs = (await found_by_content(client, token, world))["resource"]
    real_obs, real_patient = world["records"]["Observation"]["id"], world["records"]["Patient"]["id"]
    status, _, _ = await ask(
        client, token, f"Observation?subject={obs['subject']['reference']}&_id={obs['id']}"
    )
    assert status == 200
    record = read_audit(client.settings)[-1]
    text = json.dumps(record, ensure_ascii=False)
    assert obs["id"] not in text and obs["subject"]["reference"] not in text
    assert f"Patient/{real_patient}" in record["query"] or f"Patient%2F{real_patient}" in record["query"]
    assert record["patients_targeted"] == [f"Patient/{real_patient}"]
    assert record["patients_disclosed"] == [f"Patient/{real_patient}"]
    assert f"Observation/{real_obs}" in record["resources_disclosed"]
    status, _, _ = await ask(client, token, f"Observation/{obs['id']}")
    record = read_audit(client.settings)[-1]
    assert status == 200 and record["path"] == f"Observation/{real_obs}" and record["resource_id"] == real_obs
    assert obs["id"] not in json.dumps(record, ensure_ascii=False)


# --- 3. one key per study ------------------------------------------------------------------------


async def test_two_studies_get_unlinkable_pseudonyms(client: Any, idp: Any, fhir_server: Any) -> None:
    world = await seed(fhir_server)
    await grant(client, idp, "res-study-a", kind="export", purposes=["HRESCH"], agreement="IRB-2026-A")
    await grant(client, idp, "res-study-b", kind="export", purposes=["HRESCH"], agreement="IRB-2026-B")
    a, b = idp.token("researcher", sub="res-study-a"), idp.token("researcher", sub="res-study-b")
    seen_a = (await found_by_content(client, a, world))["resource"]
    seen_b = (await found_by_content(client, b, world))["resource"]
    assert seen_a["id"] != seen_b["id"] and seen_a["subject"] != seen_b["subject"]
    assert seen_a["code"] == seen_b["code"]  # the same record
    # The same study's pseudonyms are stable; another study's name nothing here.
    assert (await found_by_content(client, a, world))["resource"]["id"] == seen_a["id"]
    for path in (
        f"Observation/{seen_a['id']}",
        f"Observation?subject={seen_a['subject']['reference']}",
        f"Observation?_id={seen_a['id']}",
    ):
        status, body, headers = await ask(client, b, path)
        assert status == 400 and rules(body) == {"pseudonym.unknown"} and "I.4" in clauses(body), (path, body)
        assert not leaks(world, body, headers)
    # A researcher without a study grant has pseudonyms of her own.
    alone = (await found_by_content(client, idp.token("researcher", sub="res-alone"), world))["resource"]
    assert alone["id"] not in (seen_a["id"], seen_b["id"])


async def test_a_pseudonym_is_an_ordinary_id_for_care(client: Any, idp: Any, fhir_server: Any) -> None:
    """Outside research nothing is mapped back: a clinician's `Patient/ps-…` is that id upstream."""
    world = await seed(fhir_server)
    obs = (await found_by_content(client, idp.token("researcher", sub="res-hostile"), world))["resource"]
    records = idp.token("records_officer", sub="u-rec-research")
    status, body, _ = await ask(client, records, f"Observation/{obs['id']}", purpose="HOPERAT")
    assert status == 404, body


async def test_a_research_read_names_no_real_id_in_its_headers(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    world = await seed(fhir_server)
    token = idp.token("researcher", sub="res-hostile")
    obs = (await found_by_content(client, token, world))["resource"]
    status, body, headers = await ask(client, token, f"Observation/{obs['id']}")
    assert status == 200
    versions = {str(r["meta"]["versionId"]) for r in world["records"].values()}
    etag = headers.get("ETag", "")
    assert not leaks(world, body, headers) and not any(f'"{v}"' in etag for v in versions), dict(headers)


def _cursor_payloads(body: Any) -> str:
    """What a client can read in the gateway's paging cursors: the token decoded as far as a client
    can (before the cursor was encrypted, base64 JSON that named the upstream's link)."""
    import base64

    out = []
    for link in (body or {}).get("link") or []:
        token = link.get("url", "").split("_cursor=", 1)[-1] if "_cursor=" in link.get("url", "") else ""
        for part in token.split("."):
            out.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8", "replace"))
    return "\n".join(out)


async def test_a_research_paging_cursor_names_no_real_id(client: Any, idp: Any, fhir_server: Any) -> None:
    world = await seed(fhir_server)
    real = world["records"]["Patient"]["id"]
    await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": MARKER_SYSTEM, "code": world["tag"]}]},
            "subject": {"reference": f"Patient/{real}"},
        },
    )
    token = idp.token("researcher", sub="res-hostile")
    status, body, _ = await ask(
        client, token, f"Observation?code={quote(MARKER_SYSTEM)}%7C{world['tag']}&_count=1"
    )
    assert status == 200 and "_cursor=" in json.dumps(body), body
    subject = body["entry"][0]["resource"]["subject"]["reference"]
    status, body, _ = await ask(client, token, f"Observation?subject={subject}&_count=1")
    assert status == 200 and "_cursor=" in json.dumps(body), body
    assert not leaks(world, _cursor_payloads(body)), _cursor_payloads(body)
