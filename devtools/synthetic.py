"""Seeded synthetic patients for EMR Guard development and tests.

Bundles come from carebundle (clinically coherent US Core R4 transaction bundles) and
are then localised: every Patient and Practitioner gets a Chinese name, address and
telecom from Faker's ``zh_CN`` locale, each Patient a hospital MRN, and the Encounter a
department. A few patients carry sensitive diagnoses with security labels, always at the
same indexes, so gateway policies can be tested against known data:

* index % 10 == 1: HIV (ICD-10 ``B20``), ``meta.security`` confidentiality ``V`` + ``HIV``,
  Encounter department ``infectious_disease``;
* index % 10 == 2: depressive episode (ICD-10 ``F32``), confidentiality ``R``, department
  ``psychiatry``.

Everything is a pure function of ``(seed, index)``: the same seed gives byte-identical
bundles, and patient ``i`` does not change when ``count`` changes. Only the ids that the
server assigns differ between runs.

Usage::

    python -m devtools.synthetic --base-url http://127.0.0.1:8090/fhir/R4 --count 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import json
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import carebundle
from faker import Faker

JSONDict = dict[str, Any]

MRN_SYSTEM = "urn:oid:2.16.156.emrguard.mrn"
DEPARTMENT_SYSTEM = "https://emrguard.example/fhir/CodeSystem/department"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"

# Department code -> display (zh_CN).
DEPARTMENTS: dict[str, str] = {
    "cardiology": "心血管内科",
    "psychiatry": "精神科",
    "oncology": "肿瘤科",
    "emergency": "急诊科",
    "obstetrics": "产科",
    "infectious_disease": "感染科",
}

# carebundle's clinical profiles a patient is drawn from.
PROFILES: tuple[str, ...] = ("healthy", "hypertension", "type2_diabetes", "ckd_stage3", "anaemia")

HIV = "hiv"
PSYCHIATRIC = "psychiatric"

# Namespace for the urn:uuid fullUrls of the resources added here.
_URN_NAMESPACE = uuid.UUID("5b0e6a8e-3f7c-4b7a-9a51-2f1f4c6d8e01")

_CONFIDENTIALITY_DISPLAY = {"V": "very restricted", "R": "restricted"}


@dataclass(frozen=True)
class _Sensitive:
    code: str
    display: str
    confidentiality: str
    extra_labels: tuple[JSONDict, ...]
    department: str


_SENSITIVE: dict[str, _Sensitive] = {
    HIV: _Sensitive(
        code="B20",
        display="Human immunodeficiency virus [HIV] disease",
        confidentiality="V",
        extra_labels=(
            {"system": ACT_CODE_SYSTEM, "code": "HIV", "display": "HIV/AIDS information sensitivity"},
        ),
        department="infectious_disease",
    ),
    PSYCHIATRIC: _Sensitive(
        code="F32",
        display="Depressive episode",
        confidentiality="R",
        extra_labels=(),
        department="psychiatry",
    ),
}


def mrn_for(index: int) -> str:
    """The MRN value of patient ``index`` (0-based): index 0 is ``MRN000001``."""
    return f"MRN{index + 1:06d}"


def sensitivity_for(index: int) -> str | None:
    """``"hiv"``, ``"psychiatric"`` or None for patient ``index``."""
    return {1: HIV, 2: PSYCHIATRIC}.get(index % 10)


@dataclass(frozen=True)
class _Plan:
    """Per-patient choices, all derived from (seed, index)."""

    profile: str
    sex: str
    department: str
    sensitivity: str | None
    age_range: tuple[int, int]


def department_for(index: int, seed: int = 262) -> str:
    """The department that treats synthetic patient ``index`` (its Encounter's serviceType)."""
    return _plan(seed, index).department


def _plan(seed: int, index: int) -> _Plan:
    rng = random.Random(f"emrguard-synthetic:{seed}:{index}")
    sex = "F" if index % 2 == 0 else "M"
    sensitivity = sensitivity_for(index)
    profile = rng.choice(PROFILES)
    departments = sorted(d for d in DEPARTMENTS if sex == "F" or d != "obstetrics")
    department = rng.choice(departments)
    if sensitivity is not None:
        department = _SENSITIVE[sensitivity].department
    age_range = (22, 40) if department == "obstetrics" else (25, 85)
    return _Plan(profile, sex, department, sensitivity, age_range)


def _urn(seed: int, index: int, role: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_URN_NAMESPACE, f'{seed}:{index}:{role}')}"


def _narrative(text: str) -> JSONDict:
    return {
        "status": "generated",
        "div": (
            '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>SYNTHETIC TEST DATA — not a real person.'
            f"</b></p><p>{html.escape(text)}</p></div>"
        ),
    }


def _chinese_name(fake: Faker, female: bool) -> JSONDict:
    family = fake.last_name()
    given = fake.first_name_female() if female else fake.first_name_male()
    return {"use": "official", "text": f"{family}{given}", "family": family, "given": [given]}


def _chinese_address(fake: Faker) -> JSONDict:
    state = fake.province()
    city = f"{fake.city_name()}市"
    district = f"{fake.district()}区"
    line = fake.street_address()
    return {
        "use": "home",
        "type": "physical",
        "text": f"{state}{city}{district}{line}",
        "line": [line],
        "city": city,
        "district": district,
        "state": state,
        "postalCode": fake.postcode(),
        "country": "CN",
    }


def _telecom(fake: Faker, *, use: str) -> list[JSONDict]:
    return [
        {"system": "phone", "value": fake.phone_number(), "use": "mobile"},
        {"system": "email", "value": fake.free_email(), "use": use},
    ]


def _coding(system: str, code: str, display: str) -> JSONDict:
    return {"system": system, "code": code, "display": display}


def _sensitive_condition(kind: _Sensitive, patient_urn: str, encounter_urn: str, recorded: str) -> JSONDict:
    security = [
        _coding(CONFIDENTIALITY_SYSTEM, kind.confidentiality, _CONFIDENTIALITY_DISPLAY[kind.confidentiality]),
        *kind.extra_labels,
        _coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "HTEST", "test health data"),
    ]
    return {
        "resourceType": "Condition",
        "meta": {"security": security},
        "text": _narrative(f"Condition: {kind.display} (synthetic)."),
        "clinicalStatus": {
            "coding": [
                _coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")
            ]
        },
        "verificationStatus": {
            "coding": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"
                )
            ]
        },
        "category": [
            {
                "coding": [
                    _coding(
                        "http://terminology.hl7.org/CodeSystem/condition-category",
                        "encounter-diagnosis",
                        "Encounter Diagnosis",
                    )
                ]
            }
        ],
        "code": {"coding": [_coding(ICD10_SYSTEM, kind.code, kind.display)], "text": kind.display},
        "subject": {"reference": patient_urn},
        "encounter": {"reference": encounter_urn},
        "recordedDate": recorded,
    }


def _entries_of(bundle: JSONDict, resource_type: str) -> list[JSONDict]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def make_patient_bundle(index: int, seed: int = 262) -> JSONDict:
    """Transaction bundle for patient ``index`` of the set made with ``seed``."""
    plan = _plan(seed, index)
    generated = carebundle.generate_bundle(
        profile=plan.profile, seed=seed, sex=plan.sex, age_range=plan.age_range, index=index
    )
    # carebundle keeps decimals as Decimal on the model; its own serialiser emits them as
    # JSON numbers. Parsing that back gives plain JSON types (floats for decimals).
    bundle: JSONDict = json.loads(carebundle.to_json(generated, indent=0))

    fake = Faker("zh_CN")
    fake.seed_instance(seed * 1_000_003 + index)

    (patient_entry,) = _entries_of(bundle, "Patient")
    patient = patient_entry["resource"]
    female = patient.get("gender") == "female"
    name = _chinese_name(fake, female)
    patient["identifier"] = [
        {
            "use": "usual",
            "type": {"coding": [_coding(V2_0203_SYSTEM, "MR", "Medical record number")]},
            "system": MRN_SYSTEM,
            "value": mrn_for(index),
        },
        *patient.get("identifier", []),
    ]
    patient["name"] = [name]
    patient["telecom"] = _telecom(fake, use="home")
    patient["address"] = [_chinese_address(fake)]
    patient["text"] = _narrative(
        f"{name['text']}，{'女' if female else '男'}，出生日期 {patient.get('birthDate', '未知')}。"
    )

    for entry in _entries_of(bundle, "Practitioner"):
        practitioner = entry["resource"]
        doctor = _chinese_name(fake, female=fake.random_int(0, 1) == 1)
        practitioner["name"] = [doctor]
        practitioner["telecom"] = _telecom(fake, use="work")
        practitioner["text"] = _narrative(f"{doctor['text']} 医生 (synthetic).")

    (encounter_entry,) = _entries_of(bundle, "Encounter")
    department_display = DEPARTMENTS[plan.department]
    encounter_entry["resource"]["serviceType"] = {
        "coding": [_coding(DEPARTMENT_SYSTEM, plan.department, department_display)],
        "text": department_display,
    }

    if plan.sensitivity is not None:
        encounter = encounter_entry["resource"]
        recorded = str(encounter.get("period", {}).get("start", "2026-01-01"))[:10]
        bundle["entry"].append(
            {
                "fullUrl": _urn(seed, index, f"condition-{plan.sensitivity}"),
                "resource": _sensitive_condition(
                    _SENSITIVE[plan.sensitivity],
                    patient_entry["fullUrl"],
                    encounter_entry["fullUrl"],
                    recorded,
                ),
                "request": {"method": "POST", "url": "Condition"},
            }
        )
    return bundle


def make_patient_bundles(count: int, seed: int = 262) -> list[JSONDict]:
    """``count`` transaction bundles (JSON-ready dicts), one patient each, reproducible by seed."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return [make_patient_bundle(index, seed) for index in range(count)]


class SeedError(RuntimeError):
    """The server rejected a transaction or answered something unexpected."""


def patient_id_from_response(request_bundle: JSONDict, response_bundle: JSONDict) -> str:
    """The server-assigned Patient id, from the transaction-response entry's ``response.location``.

    Response entries are in request order (FHIR R4 http.html#transaction-response). A
    location may be ``Patient/<id>``, ``Patient/<id>/_history/<vid>`` or absolute.
    """
    position = next(
        i for i, e in enumerate(request_bundle["entry"]) if e["resource"]["resourceType"] == "Patient"
    )
    entries = response_bundle.get("entry") or []
    if response_bundle.get("type") != "transaction-response" or len(entries) != len(request_bundle["entry"]):
        raise SeedError(f"unexpected transaction response: {json.dumps(response_bundle)[:500]}")
    location = str((entries[position].get("response") or {}).get("location") or "")
    parts = location.split("/")
    if "Patient" in parts and parts.index("Patient") + 1 < len(parts):
        return parts[parts.index("Patient") + 1]
    resource_id = (entries[position].get("resource") or {}).get("id")
    if resource_id:
        return str(resource_id)
    raise SeedError(f"no Patient location in transaction response entry: {entries[position]}")


async def _post_transaction(session: aiohttp.ClientSession, base_url: str, bundle: JSONDict) -> JSONDict:
    async with session.post(
        base_url.rstrip("/"),
        data=json.dumps(bundle, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
    ) as response:
        text = await response.text()
        if response.status != 200:
            raise SeedError(f"transaction failed: HTTP {response.status}: {text[:1000]}")
        result: JSONDict = json.loads(text)
        return result


async def seed_bundles(
    base_url: str, bundles: Sequence[JSONDict], session: aiohttp.ClientSession | None = None
) -> list[str]:
    """POST ready-made patient bundles as transactions; return the server's Patient ids in order."""
    own_session = session is None
    client = session if session is not None else aiohttp.ClientSession()
    try:
        ids: list[str] = []
        for bundle in bundles:
            response = await _post_transaction(client, base_url, bundle)
            ids.append(patient_id_from_response(bundle, response))
        return ids
    finally:
        if own_session:
            await client.close()


async def seed_server(
    base_url: str,
    count: int,
    seed: int = 262,
    session: aiohttp.ClientSession | None = None,
) -> list[str]:
    """POST ``count`` patients as transactions to ``base_url``; return the server's Patient ids.

    Ids are in patient-index order. Pass a ``session`` to reuse connections or to carry
    credentials (e.g. ``aiohttp.ClientSession(headers={"Authorization": ...})``).
    """
    return await seed_bundles(base_url, make_patient_bundles(count, seed), session)


def _display_name(bundle: JSONDict) -> str:
    (entry,) = _entries_of(bundle, "Patient")
    return str(entry["resource"]["name"][0]["text"])


async def _seed_and_report(args: argparse.Namespace) -> None:
    headers: dict[str, str] = {}
    if args.basic_auth:
        user, _, password = args.basic_auth.partition(":")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    started = time.perf_counter()
    bundles = make_patient_bundles(args.count, args.seed)
    generated = time.perf_counter()
    async with aiohttp.ClientSession(headers=headers) as session:
        ids = await seed_bundles(args.base_url, bundles, session=session)
    finished = time.perf_counter()
    for index, (patient_id, bundle) in enumerate(zip(ids, bundles, strict=True)):
        plan = _plan(args.seed, index)
        tags = plan.department + (f" sensitive={plan.sensitivity}" if plan.sensitivity else "")
        print(f"Patient/{patient_id}\t{mrn_for(index)}\t{_display_name(bundle)}\t{tags}")
    print(
        f"seeded {len(ids)} patients in {finished - started:.2f} s "
        f"(generate {generated - started:.2f} s, POST {finished - generated:.2f} s)",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Seed a FHIR R4 server with synthetic Chinese patients.")
    parser.add_argument("--base-url", default="http://127.0.0.1:8090/fhir/R4", help="FHIR base URL")
    parser.add_argument("--count", type=int, default=20, help="number of patients")
    parser.add_argument("--seed", type=int, default=262, help="random seed")
    parser.add_argument("--basic-auth", default="", metavar="USER:PASS", help="HTTP basic credentials")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_seed_and_report(args))
    except (SeedError, aiohttp.ClientError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
