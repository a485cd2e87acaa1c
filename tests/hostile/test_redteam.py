"""Red team: attacks the other hostile suites do not make, against both real upstreams and both engines.

Insiders (a cardiology nurse, a cardiology physician, a student without a grant, a researcher and a
vendor) try to learn what they may not: a psychiatry patient (P2), a sealed cardiology patient (P8),
HIV diagnoses (grade 5, withheld from nurses) of cardiology patients, and — for the researcher — any
real id. Every test asserts the SAFE behaviour, so a failing test is a leak:

- content: a withheld patient's id, name or identifier values, a withheld record's id, the HIV code
  or its texts, the seal's case reference, anywhere in the body or the headers (minus what the
  requester itself sent);
- shape: two answers, one about a withheld record and one about a record that does not exist, that
  differ (status, rule, total, entries, links, entry statuses) tell that the withheld one exists;
- audit: exactly one record per request, its status the answer's, and every patient whose record
  left named in ``patients_disclosed``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict
from yarl import URL

from gateway.fhir.pseudonyms import Pseudonymiser
from tests.hostile.conftest import Gw, sealed_world_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ICD10 = "http://hl7.org/fhir/sid/icd-10"
DEPT = "https://emrguard.example/fhir/CodeSystem/department"
HIV_DISPLAY = "Human immunodeficiency virus [HIV] disease"
HIV_CODE = {"coding": [{"system": ICD10, "code": "B20", "display": HIV_DISPLAY}]}
I10_CODE = {"coding": [{"system": ICD10, "code": "I10"}], "text": "hypertension"}
CASE_REF = "CASE-红队-2026-0777"
SEAL_REASON = "红队封存测试:媒体舆情"
PSEUDONYM_SECRET = "test-pseudonym-secret-0123456789-abcdef"
#: Texts that tell an HIV diagnosis, whatever code carries it.
HIV_TEXTS = ("B20", "immunodeficiency", "HIV", "AIDS", "1C62")
PSYCH_TEXTS = ("F32", "抑郁")
ROLES: dict[str, tuple[dict[str, str], str]] = {
    "nurse": ({"roles": "nurse", "sub": "rt-nurse", "dept": "cardiology"}, "TREAT"),
    "nurse_psych": ({"roles": "nurse", "sub": "rt-nurse", "dept": "psychiatry"}, "TREAT"),
    "physician": ({"roles": "physician", "sub": "rt-doctor", "dept": "cardiology"}, "TREAT"),
    "student": ({"roles": "student", "sub": "rt-student", "dept": "cardiology"}, "TRAIN"),
    "researcher": ({"roles": "researcher", "sub": "rt-researcher"}, "HRESCH"),
    "vendor": ({"roles": "vendor", "sub": "rt-vendor"}, "HOPERAT"),
}
DOCUMENTED_5XX = {502, 503, 504}


# --- the world ------------------------------------------------------------------------------------


async def _post(base: str, resource: dict[str, Any]) -> dict[str, Any] | None:
    """Written straight to the FHIR server; None when that server refuses the shape."""
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{base}/{resource['resourceType']}", data=json.dumps(resource), headers=headers) as r,
    ):
        if r.status != 201:
            # A shape this server refuses to store (HAPI validates references): it must be the
            # server's own 4xx verdict, never a broken harness or a server that is not there.
            assert 400 <= r.status < 500, (r.status, await r.text())
            return None
        return await r.json(content_type=None)


async def _must(base: str, resource: dict[str, Any]) -> dict[str, Any]:
    out = await _post(base, resource)
    assert out is not None, resource
    return out


async def _get(base: str, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base}/{path}", headers={"Accept": "application/fhir+json"}) as r,
    ):
        assert r.status == 200, (path, r.status, await r.text())
        return await r.json(content_type=None)


async def _cardiology_patient(base: str, name: str) -> str:
    patient = await _must(
        base,
        {
            "resourceType": "Patient",
            "name": [{"text": name}],
            "identifier": [
                {"system": "urn:oid:2.16.156.emrguard.mrn", "value": f"RT-{uuid.uuid4().hex[:8]}"}
            ],
            "gender": "male",
            "birthDate": "1966-06-06",
        },
    )
    await _must(
        base,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "serviceType": {"coding": [{"system": DEPT, "code": "cardiology"}]},
        },
    )
    return str(patient["id"])


def _condition(patient: str, code: dict[str, Any], day: str = "2026-02-01") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{patient}"},
        "code": code,
        "recordedDate": day,
    }


@dataclass
class World:
    kind: str
    base: str
    v: dict[str, str]
    markers: dict[str, tuple[set[str], set[str]]]  # role -> (texts, ids)
    optional: dict[str, bool] = field(default_factory=dict)  # shapes the server refused to store


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(fhir_server: Any) -> World:
    base, pats, deps = fhir_server.base, fhir_server.patients, fhir_server.departments
    assert deps[pats[2]] == "psychiatry" and deps[pats[4]] == "psychiatry"
    assert deps[pats[3]] == deps[pats[7]] == deps[pats[8]] == "cardiology"
    bare = [p.split("/", 1)[1] for p in pats]
    p2, p3, p7, p8 = bare[2], bare[3], bare[7], bare[8]
    people = {i: await _get(base, f"Patient/{bare[i]}") for i in range(len(bare))}
    owned: dict[str, set[str]] = {b: set() for b in bare}
    for rtype in ("Observation", "Condition", "Encounter", "MedicationRequest", "DiagnosticReport"):
        for e in (await _get(base, f"{rtype}?_count=1000")).get("entry") or []:
            r = e["resource"]
            ref = (r.get("subject") or r.get("patient") or {}).get("reference", "")
            pid = ref.rsplit("/", 1)[-1]
            if pid in owned:
                owned[pid].add(r["id"])
    p2obs = (await _get(base, f"Observation?subject=Patient/{p2}&_count=5"))["entry"][0]["resource"]["id"]
    p2enc = (await _get(base, f"Encounter?subject=Patient/{p2}&_count=5"))["entry"][0]["resource"]["id"]
    p2cond = next(
        e["resource"]["id"]
        for e in (await _get(base, f"Condition?subject=Patient/{p2}&_count=50"))["entry"]
        if any(c.get("code") == "F32" for c in e["resource"]["code"].get("coding") or [])
    )
    p3obs = (await _get(base, f"Observation?subject=Patient/{p3}&_count=5"))["entry"][0]["resource"]["id"]
    hiv = await _must(base, _condition(p7, HIV_CODE, "2026-03-01"))
    hivv = (await _get(base, f"Condition/{hiv['id']}"))["meta"]["versionId"]
    # X: a cardiology patient whose only condition is HIV; Y: one with no condition at all.
    x = await _cardiology_patient(base, "红队甲")
    xhiv = await _must(base, _condition(x, HIV_CODE, "2026-04-01"))
    y = await _cardiology_patient(base, "红队乙")
    # Twins: A has hypertension and (recorded after it) HIV; B has hypertension only.
    a = await _cardiology_patient(base, "红队丙")
    await _must(base, _condition(a, I10_CODE))
    ahiv = await _must(base, _condition(a, HIV_CODE))
    b = await _cardiology_patient(base, "红队丁")
    await _must(base, _condition(b, I10_CODE))
    p2name = people[2]["name"][0]["text"]
    p2mrn = people[2]["identifier"][0]["value"]
    display = f"{p2name} {p2mrn}"
    psych_note = {"text": "精神科随访 抑郁发作"}
    junk: dict[str, str] = {}
    for key, ref in (
        ("JUNKSPACE", f" Patient/{p2}"),
        ("JUNKPCT", f"Patient%2F{p2}"),
        ("JUNKCOND", f"Patient?identifier={p2mrn}"),
        ("JUNKURN", f"urn:uuid:{uuid.uuid4()}"),
    ):
        made = await _post(
            base,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": psych_note,
                "subject": {"reference": ref, "display": display},
            },
        )
        junk[key] = made["id"] if made else ""
    outcome = await _post(
        base,
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"{display} Patient/{p2} {HIV_DISPLAY} B20",
                }
            ],
        },
    )
    params = await _post(
        base,
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "patient", "valueReference": {"reference": f"Patient/{p2}", "display": display}},
                {"name": "diagnosis", "valueString": f"{HIV_DISPLAY} B20"},
            ],
        },
    )
    hiv_ref = {"reference": f"Condition/{hiv['id']}", "display": HIV_DISPLAY}
    dx_enc = await _must(
        base,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{p7}"},
            "serviceType": {"coding": [{"system": DEPT, "code": "cardiology"}]},
            "diagnosis": [{"condition": hiv_ref}],
        },
    )
    reason_mr = await _must(
        base,
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "tenofovir"},
            "subject": {"reference": f"Patient/{p7}"},
            "reasonReference": [hiv_ref],
        },
    )
    hiv_lab = await _must(
        base,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {
                "coding": [
                    {
                        "system": "http://loinc.org",
                        "code": "20447-9",
                        "display": "HIV 1 RNA [#/volume] (viral load) in Serum or Plasma",
                    }
                ]
            },
            "subject": {"reference": f"Patient/{p7}"},
            "valueQuantity": {"value": 15000, "unit": "copies/mL"},
        },
    )
    aids = await _must(
        base,
        _condition(
            p7,
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "62479008",
                        "display": "AIDS (Acquired immune deficiency syndrome)",
                    }
                ]
            },
        ),
    )
    icd11 = await _must(
        base,
        _condition(
            p7,
            {
                "coding": [
                    {
                        "system": "http://id.who.int/icd/release/11/mms",
                        "code": "1C62.Z",
                        "display": "HIV disease",
                    }
                ]
            },
        ),
    )
    blank_system = await _post(base, _condition(p7, {"coding": [{"system": " ", "code": "B20"}]}))
    v = {
        "P2": p2,
        "P3": p3,
        "P4": bare[4],
        "P7": p7,
        "P8": p8,
        "P2OBS": p2obs,
        "P2ENC": p2enc,
        "P2COND": p2cond,
        "P3OBS": p3obs,
        "HIV": hiv["id"],
        "HIVV": str(hivv),
        "X": x,
        "XHIV": xhiv["id"],
        "Y": y,
        "A": a,
        "AHIV": ahiv["id"],
        "B": b,
        "OO": outcome["id"] if outcome else "",
        "PARAMS": params["id"] if params else "",
        "DXENC": dx_enc["id"],
        "REASONMR": reason_mr["id"],
        "HIVLAB": hiv_lab["id"],
        "AIDS": aids["id"],
        "ICD11": icd11["id"],
        "BLANKSYS": blank_system["id"] if blank_system else "",
        "NOPE": "99999999" if fhir_server.kind == "hapi" else "00000000-0000-4000-8000-00000000dead",
        "P2MRN": p2mrn,
        **junk,
    }

    def person(i: int) -> set[str]:
        p = people[i]
        out = {n.get("text", "") for n in p.get("name") or []}
        out |= {i.get("value", "") for i in p.get("identifier") or []}
        out |= {t.get("value", "") for t in p.get("telecom") or [] if t.get("system") == "phone"}
        return {m for m in out if len(m) >= 3}

    psych = [i for i, p in enumerate(pats) if deps[p] != "cardiology"]
    withheld_people = set().union(*(person(i) for i in psych + [8]))
    withheld_ids = {bare[i] for i in psych + [8]} | {r for i in psych + [8] for r in owned[bare[i]]}
    hiv_ids = {hiv["id"], xhiv["id"], ahiv["id"]}
    secrets = {CASE_REF, SEAL_REASON}
    nurse = (withheld_people | secrets | set(HIV_TEXTS) | set(PSYCH_TEXTS), withheld_ids | hiv_ids)
    physician = (withheld_people | secrets | set(PSYCH_TEXTS), withheld_ids)
    everyone = set().union(*(person(i) for i in range(len(bare))))
    all_ids = set(bare) | {x, y, a, b} | {r for s in owned.values() for r in s} | hiv_ids
    everything = (everyone | secrets | set(HIV_TEXTS) | set(PSYCH_TEXTS), all_ids)
    markers = {
        "nurse": nurse,
        "nurse_psych": nurse,
        "physician": physician,
        "student": everything,
        "vendor": everything,
        # She sees pseudonyms only (no real id at all) and up to grade 4 (a psychiatric diagnosis).
        "researcher": (everyone | secrets | set(HIV_TEXTS), all_ids),
    }
    optional = {k: bool(v[k]) for k in (*junk, "OO", "PARAMS", "BLANKSYS")}
    return World(fhir_server.kind, base, v, markers, optional)


# --- the gateway, once per upstream and engine ------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["embedded", "opa"])
async def gw(request: pytest.FixtureRequest, world: World, idp: Any, tmp_path_factory: Any) -> Any:
    async with sealed_world_gateway(
        upstream=world.base,
        engine=request.param,
        opa_url=request.getfixturevalue("opa_server").url if request.param == "opa" else "",
        tmp=tmp_path_factory.mktemp(f"redteam-{world.kind}-{request.param}"),
        idp=idp,
        pseudonym_secret=PSEUDONYM_SECRET,
        tokens={n: idp.token(**who) for n, (who, _) in ROLES.items()},
        sealed=f"Patient/{world.v['P8']}",
        seal_reason=SEAL_REASON,
        case_ref=CASE_REF,
        officer_sub="rt-records",
    ) as g:
        yield g


# --- one request ----------------------------------------------------------------------------------------

VAR = re.compile(r"\{([A-Z][A-Z0-9]*)\}")


def fill(t: Any, v: dict[str, str]) -> Any:
    if isinstance(t, str):
        return VAR.sub(lambda m: v[m.group(1)], t)
    if isinstance(t, list):
        return [fill(i, v) for i in t]
    if isinstance(t, dict):
        return {k: fill(i, v) for k, i in t.items()}
    return t


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    text: str
    said: str
    record: dict[str, Any]

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None


async def send(
    gw: Gw,
    world: World,
    role: str,
    path: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/fhir+json",
    purpose: str | None = "",
    extra: dict[str, str] | None = None,
) -> Answer:
    v = {**world.v, **(extra or {})}
    path = fill(path, v)
    hdrs = {"Authorization": f"Bearer {gw.tokens[role]}"}
    own = ROLES[role][1]
    if purpose is not None:
        hdrs["X-Purpose-Of-Use"] = purpose or own
    for k, val in (headers or {}).items():
        hdrs[k] = fill(val, v)
    data = None
    if body is not None:
        b = fill(body, v)
        data = b.encode() if isinstance(b, str) else json.dumps(b, ensure_ascii=False).encode()
        hdrs["Content-Type"] = content_type
    url = URL(gw.origin + "/fhir" + path, encoded=True)
    async with gw.client.session.request(method, url, headers=hdrs, data=data) as resp:
        raw = await resp.read()
        out = CIMultiDict(resp.headers)
        status = resp.status
    said = " ".join([method, path, *(f"{k}: {x}" for k, x in hdrs.items() if k != "Authorization")])
    if data:
        said += " " + data.decode("utf-8", "replace")
    recs = gw.records()
    where = f"{method} {path} [{role}] {world.kind}/{gw.engine}"
    rid = out.get("X-Request-Id", "")
    assert rid, f"{where}: no X-Request-Id ({status})"
    assert [r["request_id"] for r in recs] == [rid], (
        f"AUDIT {where}: records {[r.get('request_id') for r in recs]}"
    )
    record = recs[0]
    assert record["status"] == status, f"AUDIT {where}: recorded status {record['status']} != {status}"
    assert status < 500 or status in DOCUMENTED_5XX, f"{where}: {status} {raw[:300]!r}"
    return Answer(status, out, raw.decode("utf-8", "replace"), readable(said), record)


def readable(text: str) -> str:
    return "\n".join([text, unquote(text), unquote(unquote(text))])


SKIP_HEADERS = frozenset({"content-length", "date", "x-request-id"})
BOUND = r"(?<![0-9A-Za-z%\-]){}(?![0-9A-Za-z\-])"


def _found(text: str, texts: set[str], ids: set[str]) -> set[str]:
    hits = set()
    for t in texts:
        if len(t) <= 5 and t.isascii() and t.isalnum():
            if re.search(BOUND.format(re.escape(t)), text):
                hits.add(t)
        elif t in text:
            hits.add(t)
    for i in ids:
        if i and re.search(BOUND.format(re.escape(i)), text):
            hits.add(i)
    return hits


def shown(answer: Answer) -> str:
    headers = "\n".join(f"{k}: {x}" for k, x in answer.headers.items() if k.lower() not in SKIP_HEADERS)
    body = answer.text
    try:
        body += "\n" + json.dumps(json.loads(body), ensure_ascii=False)
    except ValueError:
        pass
    return readable(body + "\n" + headers)


def leaks(world: World, role: str, answer: Answer) -> set[str]:
    texts, ids = world.markers[role]
    return _found(shown(answer), texts, ids) - _found(answer.said, texts, ids)


def _context(text: str, marker: str) -> str:
    i = text.find(marker)
    return text[max(0, i - 120) : i + 80].replace("\n", " ") if i >= 0 else ""


def assert_no_leak(world: World, gw: Gw, role: str, answer: Answer, what: str) -> None:
    found = leaks(world, role, answer)
    text = shown(answer)
    assert not found, (
        f"LEAK {what} [{role}] {world.kind}/{gw.engine} -> {answer.status}: {sorted(found)} in "
        + " | ".join(_context(text, m) for m in sorted(found))
    )


def patients_in_body(body: Any) -> set[str]:
    """Patients whose records are in an answer: Patient resources and subject/patient references."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("resourceType") == "Patient" and isinstance(node.get("id"), str):
                found.add(f"Patient/{node['id']}")
            for key in ("subject", "patient"):
                ref = node.get(key)
                if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                    m = re.search(r"Patient/([A-Za-z0-9\-.]+)", ref["reference"])
                    if m:
                        found.add(f"Patient/{m.group(1)}")
            for val in node.values():
                walk(val)
        elif isinstance(node, list):
            for val in node:
                walk(val)

    walk(body)
    return found


def assert_audited_disclosure(world: World, gw: Gw, answer: Answer, what: str) -> None:
    body = answer.json()
    if not isinstance(body, dict) or not 200 <= answer.status < 300:
        return
    released = {
        p for p in patients_in_body(body) if not p.startswith("Patient/ps-")
    }  # pseudonyms: real in the record
    missing = released - set(answer.record.get("patients_disclosed") or [])
    assert not missing, (
        f"AUDIT {what} {world.kind}/{gw.engine}: released {sorted(missing)} but patients_disclosed="
        f"{answer.record.get('patients_disclosed')}"
    )


# --- shapes: what an answer says besides the ids the requester sent ---------------------------------------


def rules_of(body: Any) -> list[str]:
    return sorted(
        c.get("code", "")
        for i in (body or {}).get("issue") or []
        for c in (i.get("details") or {}).get("coding") or []
    )


def shape(answer: Answer) -> Any:
    body = answer.json()
    if not isinstance(body, dict):
        return (answer.status, None)
    if body.get("resourceType") == "OperationOutcome":
        return (
            answer.status,
            "OO",
            rules_of(body),
            sorted(str(i.get("code")) for i in body.get("issue") or []),
        )
    if body.get("resourceType") == "Bundle":
        entries = []
        for e in body.get("entry") or []:
            resp = e.get("response") or {}
            nested = e.get("resource") or {}
            entries.append(
                (
                    (e.get("search") or {}).get("mode"),
                    resp.get("status"),
                    rules_of(resp.get("outcome")),
                    nested.get("resourceType"),
                    nested.get("total"),
                    len(nested.get("entry") or []) if nested.get("resourceType") == "Bundle" else None,
                    rules_of(nested) if nested.get("resourceType") == "OperationOutcome" else None,
                )
            )
        return (
            answer.status,
            "Bundle",
            body.get("type"),
            body.get("total"),
            "entry" in body,
            sorted(lk.get("relation", "") for lk in body.get("link") or []),
            entries,
        )
    return (answer.status, body.get("resourceType"))


# --- 1. content: records whose patient is hidden in a shape, or whose text tells a graded diagnosis ----

CONTENT = {
    # (role, path, the world key the attempt needs stored, or "")
    "junk-ref-leading-space": ("nurse", "/Observation/{JUNKSPACE}", "JUNKSPACE"),
    "junk-ref-percent-slash": ("nurse", "/Observation/{JUNKPCT}", "JUNKPCT"),
    "junk-ref-conditional": ("nurse", "/Observation/{JUNKCOND}", "JUNKCOND"),
    "junk-ref-dangling-urn": ("nurse", "/Observation/{JUNKURN}", "JUNKURN"),
    "junk-ref-search": ("physician", "/Observation?code:missing=false&_count=1000", ""),
    "stored-operationoutcome-read": ("vendor", "/OperationOutcome/{OO}", "OO"),
    "stored-operationoutcome-nurse": ("nurse", "/OperationOutcome/{OO}", "OO"),
    "stored-operationoutcome-search": ("student", "/OperationOutcome?_count=50", "OO"),
    "stored-parameters-read": ("nurse", "/Parameters/{PARAMS}", "PARAMS"),
    "encounter-diagnosis-hiv": ("nurse", "/Encounter/{DXENC}", ""),
    "encounter-diagnosis-search": ("nurse", "/Encounter?subject=Patient/{P7}&_count=100", ""),
    "medrequest-reason-hiv": ("nurse", "/MedicationRequest/{REASONMR}", ""),
    "hiv-viral-load-loinc": ("nurse", "/Observation/{HIVLAB}", ""),
    "aids-snomed-62479008": ("nurse", "/Condition/{AIDS}", ""),
    "hiv-icd11": ("nurse", "/Condition/{ICD11}", ""),
    "hiv-icd10-blank-system": ("nurse", "/Condition/{BLANKSYS}", "BLANKSYS"),
    "hiv-patient-conditions": ("nurse", "/Condition?patient={P7}&_count=200", ""),
    "head-hiv": ("nurse", "/Condition/{HIV}", ""),  # HEAD below
    "prefer-outcome-hiv": ("nurse", "/Condition/{HIV}", ""),  # Prefer below
    "x-forwarded-hiv-search": ("nurse", "/Condition?subject={P7}&_count=5", ""),
}
HEADERS = {
    "prefer-outcome-hiv": {"Prefer": "return=OperationOutcome"},
    "x-forwarded-hiv-search": {
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-For": "10.0.0.1",
        "Forwarded": "host=evil.example;proto=http",
    },
}


@pytest.mark.parametrize("name", list(CONTENT))
async def test_content_of_a_withheld_record_never_leaves(gw: Gw, world: World, name: str) -> None:
    role, path, needs = CONTENT[name]
    if needs and not world.optional.get(needs):
        return  # this server refused to store the shape (a 4xx, asserted in _post): nothing of it exists
    method = "HEAD" if name.startswith("head-") else "GET"
    answer = await send(gw, world, role, path, method=method, headers=HEADERS.get(name))
    assert_no_leak(world, gw, role, answer, name)
    assert_audited_disclosure(world, gw, answer, name)
    if name == "x-forwarded-hiv-search":
        assert "evil.example" not in shown(answer), answer.text[:400]


# --- 2. existence oracles: a withheld record and one that is not there, answered alike ------------------

PAIRS = {
    # name: (role, method, path with {V}, withheld value, missing value, body, content type)
    "batch-read-hiv": ("nurse", "POST", "", "{HIV}", "{NOPE}", "batch:Condition/{V}", None),
    "batch-read-psych-patient": ("nurse", "POST", "", "{P2}", "{NOPE}", "batch:Patient/{V}", None),
    "batch-read-sealed-patient": ("physician", "POST", "", "{P8}", "{NOPE}", "batch:Patient/{V}", None),
    "batch-vread-hiv": ("nurse", "POST", "", "{HIV}", "{NOPE}", "batch:Condition/{V}/_history/{HIVV}", None),
    "batch-history-hiv": ("nurse", "POST", "", "{HIV}", "{NOPE}", "batch:Condition/{V}/_history", None),
    "read-sealed-patient": ("nurse", "GET", "/Patient/{V}", "{P8}", "{NOPE}", None, None),
    "search-sealed-patient": ("physician", "GET", "/Observation?patient={V}", "{P8}", "{NOPE}", None, None),
    "compartment-sealed": ("physician", "GET", "/Patient/{V}/Observation", "{P8}", "{NOPE}", None, None),
    "everything-sealed": ("physician", "GET", "/Patient/{V}/$everything", "{P8}", "{NOPE}", None, None),
    "put-psych-observation": ("nurse", "PUT", "/Observation/{V}", "{P2OBS}", "{NOPE}", "put-obs", None),
    "patch-psych-observation": ("nurse", "PATCH", "/Observation/{V}", "{P2OBS}", "{NOPE}", "patch", None),
    "put-psych-condition": ("physician", "PUT", "/Condition/{V}", "{P2COND}", "{NOPE}", "put-cond", None),
    "patch-hiv-by-nurse": ("nurse", "PATCH", "/Condition/{V}", "{HIV}", "{NOPE}", "patch", None),
    "validate-psych-observation": (
        "physician",
        "GET",
        "/Observation/{V}/$validate",
        "{P2OBS}",
        "{NOPE}",
        None,
        None,
    ),
    "validate-post-psych": (
        "physician",
        "POST",
        "/Observation/{V}/$validate",
        "{P2OBS}",
        "{NOPE}",
        "params",
        None,
    ),
    "head-hiv": ("nurse", "HEAD", "/Condition/{V}", "{HIV}", "{NOPE}", None, None),
    "if-none-match-hiv": (
        "nurse",
        "GET",
        "/Condition/{V}",
        "{HIV}",
        "{NOPE}",
        None,
        {"If-None-Match": 'W/"{HIVV}"'},
    ),
    "if-modified-since-hiv": (
        "nurse",
        "GET",
        "/Condition/{V}",
        "{HIV}",
        "{NOPE}",
        None,
        {"If-Modified-Since": "Tue, 01 Jan 2999 00:00:00 GMT"},
    ),
    "if-match-put-psych": (
        "nurse",
        "PUT",
        "/Observation/{V}",
        "{P2OBS}",
        "{NOPE}",
        "put-obs",
        {"If-Match": 'W/"1"'},
    ),
    "id-count-0": ("nurse", "GET", "/Condition?_id={V}&_count=0", "{HIV}", "{NOPE}", None, None),
    "id-count-0-accurate": (
        "nurse",
        "GET",
        "/Condition?_id={V}&_count=0&_total=accurate",
        "{HIV}",
        "{NOPE}",
        None,
        None,
    ),
    "id-total-accurate": (
        "nurse",
        "GET",
        "/Condition?_id={V}&_total=accurate",
        "{HIV}",
        "{NOPE}",
        None,
        None,
    ),
    "system-id-count-0": ("nurse", "GET", "?_type=Condition&_id={V}&_count=0", "{HIV}", "{NOPE}", None, None),
    "post-search-count-0": (
        "nurse",
        "POST",
        "/Condition/_search",
        "{HIV}",
        "{NOPE}",
        "form:_id={V}&_count=0",
        None,
    ),
    "psych-obs-count-0": (
        "physician",
        "GET",
        "/Observation?_id={V}&_count=0",
        "{P2OBS}",
        "{NOPE}",
        None,
        None,
    ),
    "psych-encounter-count-0": (
        "nurse",
        "GET",
        "/Observation?encounter=Encounter/{V}&_count=0",
        "{P2ENC}",
        "{NOPE}",
        None,
        None,
    ),
    "patient-count-0": ("nurse", "GET", "/Condition?patient={V}&_count=0", "{X}", "{Y}", None, None),
    "patient-summary-count": (
        "nurse",
        "GET",
        "/Condition?patient={V}&_summary=count",
        "{X}",
        "{Y}",
        None,
        None,
    ),
    "patient-total-accurate": (
        "nurse",
        "GET",
        "/Condition?patient={V}&_total=accurate",
        "{X}",
        "{Y}",
        None,
        None,
    ),
    "batch-patient-count-0": (
        "nurse",
        "POST",
        "",
        "{X}",
        "{Y}",
        "batch:Condition?patient={V}&_count=0",
        None,
    ),
    "batch-patient-search": ("nurse", "POST", "", "{X}", "{Y}", "batch:Condition?patient={V}", None),
    "batch-twins-sorted-count-1": (
        "nurse",
        "POST",
        "",
        "{A}",
        "{B}",
        "batch:Condition?patient={V}&_sort=-_lastUpdated&_count=1",
        None,
    ),
    "batch-twins-total": (
        "nurse",
        "POST",
        "",
        "{A}",
        "{B}",
        "batch:Condition?patient={V}&_total=accurate",
        None,
    ),
    "transaction-read-hiv": ("nurse", "POST", "", "{HIV}", "{NOPE}", "transaction:Condition/{V}", None),
    "researcher-count-0": (
        "researcher",
        "GET",
        "/Condition?patient={V}&_count=0",
        "{PSX}",
        "{PSY}",
        None,
        None,
    ),
    "researcher-batch-twins": (
        "researcher",
        "POST",
        "",
        "{PSA}",
        "{PSB}",
        "batch:Condition?patient={V}&_sort=-_lastUpdated&_count=1",
        None,
    ),
}


def _pair_body(spec: str | None, value: str, world: World) -> tuple[Any, str]:
    if spec is None:
        return None, "application/fhir+json"
    if spec.startswith(("batch:", "transaction:")):
        kind, url = spec.split(":", 1)
        entry = {"request": {"method": "GET", "url": url.replace("{V}", value)}}
        return {"resourceType": "Bundle", "type": kind, "entry": [entry]}, "application/fhir+json"
    if spec.startswith("form:"):
        return spec[5:].replace("{V}", value), "application/x-www-form-urlencoded"
    if spec == "put-obs":
        return (
            {
                "resourceType": "Observation",
                "id": value,
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "Patient/{P3}"},
            },
            "application/fhir+json",
        )
    if spec == "put-cond":
        return ({**_condition(world.v["P3"], I10_CODE), "id": value}, "application/fhir+json")
    if spec == "patch":
        return [
            {"op": "replace", "path": "/recordedDate", "value": "2026-01-01"}
        ], "application/json-patch+json"
    if spec == "params":
        return {
            "resourceType": "Parameters",
            "parameter": [{"name": "mode", "valueCode": "update"}],
        }, "application/fhir+json"
    raise AssertionError(spec)


def _pseudonyms(world: World) -> dict[str, str]:
    keys = Pseudonymiser(PSEUDONYM_SECRET).for_study(f"operator:{ROLES['researcher'][0]['sub']}")
    return {f"PS{k}": keys("Patient", world.v[k]) for k in ("X", "Y", "A", "B")}


def _normalised(answer: Answer, value: str) -> str:
    return json.dumps(shape(answer), ensure_ascii=False).replace(value, "<V>")


#: Deliberate, not a leak: a clinician who would reach the patient but for the seal (P8 is
#: cardiology's, and so are they) is told the records are sealed — naming neither the case nor the
#: reason — so that they ask medical affairs; to anyone else the seal is not shown (gateway/errors.py
#: ``shown``), and their refusal is the care relationship's, as for an id that does not exist.
SEAL_SHOWN_TO_ITS_DEPARTMENT = {
    "read-sealed-patient",
    "search-sealed-patient",
    "compartment-sealed",
    "everything-sealed",
    "batch-read-sealed-patient",
}


def _pair(name: str) -> Any:
    if name in SEAL_SHOWN_TO_ITS_DEPARTMENT:
        reason = (
            "deliberate: the seal is shown to the patient's own clinicians (see SEAL_SHOWN_TO_ITS_DEPARTMENT)"
        )
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))
    return name


@pytest.mark.parametrize("name", [_pair(n) for n in PAIRS])
async def test_a_withheld_record_and_a_missing_one_look_alike(gw: Gw, world: World, name: str) -> None:
    role, method, path, withheld, missing, spec, headers = PAIRS[name]
    if name == "transaction-read-hiv" and world.kind == "medplum":
        pytest.xfail(
            "Medplum fails a whole transaction with 404 when one read names a missing id; HAPI answers "
            "per entry, and there the gateway's entries for withheld and missing look alike"
        )
    # A fresh id that names nothing (a write to a missing id may create it: never reused).
    nope = str(900000000 + uuid.uuid4().int % 99999999) if world.kind == "hapi" else str(uuid.uuid4())
    extra = {**_pseudonyms(world), "NOPE": nope}
    shapes = []
    for template in (withheld, missing):
        value = fill(template, {**world.v, **extra})
        body, ctype = _pair_body(spec, value, world)
        answer = await send(
            gw,
            world,
            role,
            path.replace("{V}", value),
            method=method,
            body=body,
            headers=headers,
            content_type=ctype,
            extra=extra,
        )
        assert_no_leak(world, gw, role, answer, name)
        assert_audited_disclosure(world, gw, answer, name)
        shapes.append(_normalised(answer, value))
    assert shapes[0] == shapes[1], (
        f"ORACLE {name} [{role}] {world.kind}/{gw.engine}: withheld vs missing differ\n"
        f"  withheld: {shapes[0][:700]}\n  missing:  {shapes[1][:700]}"
    )


# --- 3. refusals name nobody ----------------------------------------------------------------------------

REFUSALS = {
    "write-into-psych": ("nurse", "POST", "/Observation", "obs:{P2}"),
    "write-into-sealed": ("physician", "POST", "/Observation", "obs:{P8}"),
    "put-psych-record": ("physician", "PUT", "/Observation/{P2OBS}", "put:{P2OBS}"),
    "validate-psych-record": ("physician", "GET", "/Condition/{P2COND}/$validate", ""),
    "batch-mixed-refusal": (
        "nurse",
        "POST",
        "",
        "batch:Patient/{P3}|Condition/{HIV}|Patient/{P8}|Observation/{P2OBS}",
    ),
    "student-no-grant": ("student", "GET", "/Patient/{P3}", ""),
    "vendor-read": ("vendor", "GET", "/Condition/{HIV}", ""),
    "researcher-real-id": ("researcher", "GET", "/Condition?subject=Patient/{P7}", ""),
    "wrong-purpose-hiv": ("nurse", "GET", "/Condition/{HIV}", "purpose:HRESCH"),
    "psych-dept-nurse-reads-cardiology": ("nurse_psych", "GET", "/Condition?patient={A}", ""),
}


@pytest.mark.parametrize("name", list(REFUSALS))
async def test_a_refusal_names_nothing_withheld(gw: Gw, world: World, name: str) -> None:
    role, method, path, spec = REFUSALS[name]
    body: Any = None
    purpose = ""
    if spec.startswith("obs:"):
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{spec[4:]}"},
        }
    elif spec.startswith("put:"):
        body = {
            "resourceType": "Observation",
            "id": spec[4:],
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P3}"},
        }
    elif spec.startswith("batch:"):
        body = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": u}} for u in spec[6:].split("|")],
        }
    elif spec.startswith("purpose:"):
        purpose = spec[8:]
    answer = await send(gw, world, role, path, method=method, body=body, purpose=purpose)
    assert_no_leak(world, gw, role, answer, name)
    assert_audited_disclosure(world, gw, answer, name)
    # The refusal's texts name no patient, record or seal the requester did not.
    texts, ids = world.markers[role]
    for outcome in [answer.json() or {}] + [
        (e.get("response") or {}).get("outcome") or {} for e in (answer.json() or {}).get("entry") or []
    ]:
        for issue in outcome.get("issue") or []:
            said = answer.said
            text = json.dumps(issue, ensure_ascii=False)
            named = set(re.findall(r"Patient/([A-Za-z0-9\-.]+)", text)) - set(
                re.findall(r"Patient/([A-Za-z0-9\-.]+)", said)
            )
            assert not named, f"{name}: a refusal names {named}: {text}"


# --- 4. research: no real id anywhere ------------------------------------------------------------------

RESEARCH = {
    "system-history": ("GET", "/_history?_count=40", None),
    "type-history": ("GET", "/Observation/_history?_count=40", None),
    "encounter-search": ("GET", "/Encounter?_count=30", None),
    "condition-search": ("GET", "/Condition?_count=50&_total=accurate", None),
    "batch-search": ("POST", "", "batch:Observation?code=http://loinc.org%7C8867-4&_count=3"),
    "batch-searches": ("POST", "", "batch:Condition?_count=5|Encounter?_count=5|Patient?_count=3"),
    "post-search-form": ("POST", "/Observation/_search", "form:code=http://loinc.org%7C8867-4&_count=5"),
    "count-0": ("GET", "/Observation?_count=0", None),
    "elements-subject": ("GET", "/Observation?_count=10&_elements=subject,encounter", None),
    "summary-true": ("GET", "/Encounter?_count=10&_summary=true", None),
    "operationoutcome-search": ("GET", "/OperationOutcome?_count=20", None),
    "parameters-search": ("GET", "/Parameters?_count=20", None),
    "provenance-search": ("GET", "/Provenance?_count=20", None),
}


@pytest.mark.parametrize("name", list(RESEARCH))
async def test_a_research_answer_holds_no_real_id(gw: Gw, world: World, name: str) -> None:
    method, path, spec = RESEARCH[name]
    body, ctype = None, "application/fhir+json"
    if spec and spec.startswith("batch:"):
        body = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": u}} for u in spec[6:].split("|")],
        }
    elif spec and spec.startswith("form:"):
        body, ctype = spec[5:], "application/x-www-form-urlencoded"
    answer = await send(gw, world, "researcher", path, method=method, body=body, content_type=ctype)
    assert_no_leak(world, gw, "researcher", answer, name)


async def test_a_research_cursor_page_holds_no_real_id(gw: Gw, world: World) -> None:
    path = "/Observation?code=http://loinc.org%7C8867-4&_count=2"
    for _ in range(3):
        answer = await send(gw, world, "researcher", path)
        assert_no_leak(world, gw, "researcher", answer, f"research-page {path[:60]}")
        nxt = [lk["url"] for lk in (answer.json() or {}).get("link") or [] if lk.get("relation") == "next"]
        if not nxt:
            break
        path = "?" + nxt[0].split("?", 1)[1]


# --- 5. paging cursors ------------------------------------------------------------------------------------


def _next_query(answer: Answer) -> str | None:
    for lk in (answer.json() or {}).get("link") or []:
        if lk.get("relation") == "next":
            return str(lk["url"]).split("?", 1)[1]
    return None


async def test_a_cursor_follows_the_token_not_the_operator_id(gw: Gw, world: World) -> None:
    """The same `sub` with another department: the page is decided for who asks now."""
    issued = await send(gw, world, "nurse", "/Observation?patient={P3}&_count=1")
    query = _next_query(issued)
    assert issued.status == 200 and query, issued.text[:300]
    answer = await send(gw, world, "nurse_psych", f"?{query}")
    assert_no_leak(world, gw, "nurse", answer, "cursor-other-dept")
    assert answer.status == 403 and world.v["P3OBS"] not in answer.text, (
        f"CURSOR {world.kind}/{gw.engine}: a psychiatry nurse (same sub) opened cardiology's page: "
        f"{answer.status} {answer.text[:300]}"
    )


async def test_a_cursor_in_a_batch_entry_opens_nothing(gw: Gw, world: World) -> None:
    issued = await send(gw, world, "nurse", "/Observation?patient={P3}&_count=1")
    query = _next_query(issued)
    assert query
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"?{query}"}}],
    }
    answer = await send(gw, world, "nurse", "", method="POST", body=body)
    assert_no_leak(world, gw, "nurse", answer, "cursor-in-batch")
    assert_audited_disclosure(world, gw, answer, "cursor-in-batch")
    # A system search of everything must not be what a cursor in a batch turns into.
    nested = [e.get("resource") or {} for e in (answer.json() or {}).get("entry") or []]
    types = {(n2.get("resource") or {}).get("resourceType") for n in nested for n2 in n.get("entry") or []}
    assert types <= {"Observation", None}, f"cursor in a batch answered a system search: {types}"


async def test_a_cursor_by_another_method_is_refused(gw: Gw, world: World) -> None:
    issued = await send(gw, world, "nurse", "/Observation?patient={P3}&_count=1")
    query = _next_query(issued)
    assert query
    answer = await send(gw, world, "nurse", f"?{query}", method="HEAD")
    assert answer.status in (400, 403, 405), answer.status
    answer = await send(
        gw,
        world,
        "nurse",
        "/_search",
        method="POST",
        body=query,
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status in (400, 403, 405), (answer.status, answer.text[:300])
    assert_no_leak(world, gw, "nurse", answer, "cursor-in-form")


async def test_pages_followed_to_the_end_disclose_only_what_they_release(gw: Gw, world: World) -> None:
    path, seen = "/Condition?patient={P7}&_count=1&_sort=_lastUpdated", 0
    for _ in range(40):
        answer = await send(gw, world, "nurse", path)
        assert answer.status == 200, answer.text[:300]
        assert_no_leak(world, gw, "nurse", answer, "paged-hiv-patient")
        assert_audited_disclosure(world, gw, answer, "paged-hiv-patient")
        seen += len(
            [
                e
                for e in (answer.json() or {}).get("entry") or []
                if (e.get("search") or {}).get("mode") != "outcome"
            ]
        )
        query = _next_query(answer)
        if not query:
            break
        path = f"?{query}"
    assert seen >= 1


async def test_a_cursor_from_before_a_grade_change_releases_nothing_new(gw: Gw, world: World) -> None:
    """A cursor for the twin with HIV: every page, followed to the end, holds no HIV record."""
    path = "/Condition?patient={A}&_count=1&_sort=_lastUpdated&_total=accurate"
    for _ in range(5):
        answer = await send(gw, world, "nurse", path)
        assert_no_leak(world, gw, "nurse", answer, "twin-pages")
        body = answer.json() or {}
        assert body.get("total") in (None, 1), f"total tells the withheld count: {body.get('total')}"
        query = _next_query(answer)
        if not query:
            break
        path = f"?{query}"


# --- 6. the audit record -------------------------------------------------------------------------------


async def test_a_batch_record_names_every_patient_it_released(gw: Gw, world: World) -> None:
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/{P3}"}},
            {"request": {"method": "GET", "url": "Patient/{P7}"}},
            {"request": {"method": "GET", "url": "Condition/{HIV}"}},
        ],
    }
    answer = await send(gw, world, "nurse", "", method="POST", body=body)
    assert answer.status == 200, answer.text[:300]
    assert_no_leak(world, gw, "nurse", answer, "batch-audit")
    disclosed = set(answer.record["patients_disclosed"])
    assert {f"Patient/{world.v['P3']}", f"Patient/{world.v['P7']}"} <= disclosed, (
        f"AUDIT batch {world.kind}/{gw.engine}: patients_disclosed={sorted(disclosed)} for entries "
        + json.dumps(
            [(e.get("response") or {}).get("status") for e in (answer.json() or {}).get("entry") or []]
        )
        + " "
        + json.dumps(sorted(patients_in_body(answer.json())))
    )
    assert f"Patient/{world.v['P2']}" not in disclosed, disclosed


async def test_a_write_record_names_the_patient_written_and_returned(gw: Gw, world: World) -> None:
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "red team note"},
        "subject": {"reference": "Patient/{P3}"},
    }
    answer = await send(
        gw,
        world,
        "nurse",
        "/Observation",
        method="POST",
        body=body,
        headers={"Prefer": "return=representation"},
    )
    assert answer.status in (200, 201), answer.text[:300]
    assert_audited_disclosure(world, gw, answer, "create-returned")
    assert f"Patient/{world.v['P3']}" in (answer.record.get("patients_targeted") or []), answer.record


async def test_a_form_and_query_search_records_both(gw: Gw, world: World) -> None:
    answer = await send(
        gw,
        world,
        "nurse",
        "/Observation/_search?patient={P3}",
        method="POST",
        body="patient={P2}",
        content_type="application/x-www-form-urlencoded",
    )
    assert_no_leak(world, gw, "nurse", answer, "form-and-query")
    assert answer.status == 403, (answer.status, answer.text[:300])
    targeted = set(answer.record.get("patients_targeted") or [])
    assert f"Patient/{world.v['P2']}" in targeted, answer.record


async def test_a_head_request_is_audited_like_a_read(gw: Gw, world: World) -> None:
    answer = await send(gw, world, "nurse", "/Patient/{P3}", method="HEAD")
    assert answer.status in (200, 400, 404, 405), answer.status
    assert_no_leak(world, gw, "nurse", answer, "head-own")
    if answer.status == 200:
        assert (
            f"Patient/{world.v['P3']}" in (answer.record.get("patients_disclosed") or []) or not answer.text
        )


async def test_everything_of_an_own_patient_records_every_patient_released(gw: Gw, world: World) -> None:
    answer = await send(gw, world, "physician", "/Patient/{P7}/$everything?_count=200")
    assert_no_leak(world, gw, "physician", answer, "everything-own")
    assert_audited_disclosure(world, gw, answer, "everything-own")


async def test_duplicate_purpose_headers_are_not_a_way_around(gw: Gw, world: World) -> None:
    """Two purposes: the nurse is not served under either silently."""
    url = URL(gw.origin + "/fhir" + fill("/Condition/{HIV}", world.v), encoded=True)
    headers = CIMultiDict(
        [
            ("Authorization", f"Bearer {gw.tokens['nurse']}"),
            ("X-Purpose-Of-Use", "ETREAT"),
            ("X-Purpose-Of-Use", "TREAT"),
        ]
    )
    headers.add("X-Break-Glass-Reason", "patient collapsed in ward")
    async with gw.client.session.get(url, headers=headers) as resp:
        text = await resp.text()
        status = resp.status
        rid = resp.headers.get("X-Request-Id", "")
    recs = gw.records()
    assert [r["request_id"] for r in recs] == [rid]
    if status == 200:
        assert recs[0].get("purpose") in ("ETREAT", "BTG") or recs[0].get("break_glass"), (
            f"AUDIT two purposes {world.kind}/{gw.engine}: the HIV record was released but the record says "
            f"purpose={recs[0].get('purpose')}"
        )
    assert "B20" not in text or status == 200
