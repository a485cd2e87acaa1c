"""Hostile insiders against both real upstreams and both engines: a cardiology nurse (TREAT, grade cap 4),
a cardiology physician, a student without a rotation grant (TRAIN), a researcher (HRESCH, cap 4,
pseudonyms) and a vendor without an agreement try, in many spellings, to reach what they may not see:
the patients of psychiatry (and of every other department but cardiology), a cardiology patient's HIV
diagnosis (ICD-10 B20, grade 5) and a sealed cardiology patient (封存, sealed through /admin/seals).

A leak is judged by content: the withheld patients' ids (and their records' ids), names, identifiers
(MRN and the other identifier values) and phone numbers, the HIV code, the psychiatric diagnosis (F32)
for cardiology staff, the seal's case reference and reason, the content of a psychiatry patient's
Binary, and for the researcher every real patient id (she sees pseudonyms) — anywhere in the body,
the headers or the paging cursors of the answer, minus what the requester itself sent.
Every attempt must leave exactly one new audit record, whose request_id is the answer's X-Request-Id,
and no 5xx but the documented upstream/audit ones. Search oracles are judged by comparing, byte by byte
after removing the ids the requester sent and the request ids, the answers for two twin cardiology
patients that differ only in the HIV diagnosis one of them has.

Set-up is shared: the withheld records are created once per upstream, the gateway (and its seal) once
per upstream and engine. Attempts that leak today are not in this file (they were reported with the
suite); what is here holds on both upstreams and both engines.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_plus

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict
from yarl import URL

from gateway.fhir.pseudonyms import Pseudonymiser
from plugins.watermark.codec import remove_marks
from tests.hostile.conftest import Gw, sealed_world_gateway, stored

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ICD10 = "http://hl7.org/fhir/sid/icd-10"
DEPARTMENT_SYSTEM = "https://emrguard.example/fhir/CodeSystem/department"
HIV_CODE = {
    "coding": [{"system": ICD10, "code": "B20", "display": "Human immunodeficiency virus [HIV] disease"}]
}
HIV_MARKERS = ("B20", "immunodeficiency")
#: The psychiatry patient's diagnosis (ICD-10 F32, grade 4): withheld from cardiology staff.
PSYCH_MARKERS = ("F32", "Depressive episode")
CASE_REF = "CASE-舆情-2026-0419"
SEAL_REASON = "公众舆情事件:媒体报道该患者诊疗争议(封存测试)"
TWIN_NAME = "孪生测试者"
TWIN_MRN = "TWIN-MRN-262"
BINARY_TEXT = "精神科病程记录 心理评估 机密"
PSEUDONYM_SECRET = "test-pseudonym-secret-0123456789-abcdef"
OWNED_TYPES = (
    "Observation",
    "Condition",
    "Encounter",
    "DiagnosticReport",
    "MedicationRequest",
    "AllergyIntolerance",
)
#: 5xx answers the gateway documents (upstream unreachable/unusable, audit or policy unavailable).
DOCUMENTED_5XX = {
    502: {"upstream.unreachable", "upstream.not-json", "upstream.bad-json", "upstream.not-fhir"}
    | {"upstream.too-large", "care.lookup-failed"},
    503: {"audit.unavailable", "policy.unavailable"},
    504: {"upstream.timeout"},
}
ROLES: dict[str, tuple[dict[str, str], str]] = {
    "nurse": ({"roles": "nurse", "sub": "n-cardio-insider", "dept": "cardiology"}, "TREAT"),
    "physician": ({"roles": "physician", "sub": "dr-cardio-insider", "dept": "cardiology"}, "TREAT"),
    "student": ({"roles": "student", "sub": "stu-insider", "dept": "cardiology"}, "TRAIN"),
    "researcher": ({"roles": "researcher", "sub": "res-insider"}, "HRESCH"),
    "vendor": ({"roles": "vendor", "sub": "ven-insider"}, "HOPERAT"),
    "nurse2": ({"roles": "nurse", "sub": "n-cardio-other", "dept": "cardiology"}, "TREAT"),
}


# --- what counts as a leak -------------------------------------------------------------------------


ID_BOUNDS = r"(?<![^/\"=,\s])({})(?![0-9A-Za-z.\-])"


#: A short code (B20, F32) stands alone: not inside a uuid or after a percent-escape ("%2F32b2...").
CODE_BOUNDS = r"(?<![0-9A-Za-z%])({})(?![0-9A-Za-z])"


def _is_code(marker: str) -> bool:
    return len(marker) <= 5 and marker.isascii() and marker.isalnum()


class Markers:
    """Strings whose presence in an answer is a leak. Numeric ids (HAPI) match only where an id stands
    (after `/`, `"`, `=`, `,` or a blank, and not followed by more of an id), short codes only on their
    own; any other marker anywhere."""

    def __init__(self, texts: Iterable[str], ids: Iterable[str] = ()) -> None:
        ids = {i for i in ids if i}
        texts = {t for t in texts if t}
        self.plain = sorted({t for t in texts if not _is_code(t)} | {i for i in ids if not i.isdigit()})
        numeric = sorted((i for i in ids if i.isdigit()), key=len, reverse=True)
        self.numeric = re.compile(ID_BOUNDS.format("|".join(numeric))) if numeric else None
        codes = sorted(t for t in texts if _is_code(t))
        self.codes = re.compile(CODE_BOUNDS.format("|".join(map(re.escape, codes)))) if codes else None

    def found(self, text: str) -> set[str]:
        hits = {m for m in self.plain if m in text}
        for pattern in (self.numeric, self.codes):
            if pattern is not None:
                hits |= set(pattern.findall(text))
        return hits


CURSOR_RE = re.compile(r"_cursor=([A-Za-z0-9_\-]+)\.([A-Za-z0-9_\-]+)")


def _cursor_payloads(text: str) -> list[str]:
    out = []
    for body, _ in CURSOR_RE.findall(text):
        try:
            out.append(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8", "replace"))
        except ValueError:
            out.append(body)
    return out


def readable(raw: str) -> str:
    """A text and every way it can be read: percent-decoded (twice), JSON-unescaped, cursors opened."""
    parts = [raw, unquote(raw), unquote(unquote(raw)), unquote_plus(raw)]
    try:
        parts.append(json.dumps(json.loads(raw), ensure_ascii=False))
    except ValueError:
        pass
    parts += _cursor_payloads(raw)
    text = "\n".join(parts)
    return CURSOR_RE.sub("_cursor=<cursor>", text)


# --- the world: withheld records, once per upstream ------------------------------------------------


@dataclass
class World:
    kind: str
    base: str
    vars: dict[str, str]
    markers: dict[str, Markers]
    twins: dict[str, dict[str, str]]  # "A" (with HIV) / "B" (without): placeholder -> id
    pseudonyms: dict[str, str] = field(default_factory=dict)


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers={"Accept": "application/fhir+json"}) as r:
        assert r.status == 200, (url, r.status, await r.text())
        return await r.json(content_type=None)


def _patient_of(resource: dict[str, Any]) -> str | None:
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return f"Patient/{ref.rsplit('Patient/', 1)[1]}" if "Patient/" in ref else None


def _person_markers(patient: dict[str, Any]) -> set[str]:
    out = {n.get("text", "") for n in patient.get("name") or []}
    out |= {i.get("value", "") for i in patient.get("identifier") or []}
    out |= {t.get("value", "") for t in patient.get("telecom") or [] if t.get("system") == "phone"}
    return {m for m in out if len(m) >= 2}


async def _twin(fhir_server: Any, with_hiv: bool) -> dict[str, str]:
    patient = await stored(
        fhir_server,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:2.16.156.emrguard.mrn", "value": TWIN_MRN}],
            "name": [{"text": TWIN_NAME}],
            "gender": "female",
            "birthDate": "1970-01-01",
        },
    )
    ref = {"reference": f"Patient/{patient['id']}"}
    enc = await stored(
        fhir_server,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": ref,
            "serviceType": {"coding": [{"system": DEPARTMENT_SYSTEM, "code": "cardiology"}]},
        },
    )
    enc_ref = {"reference": f"Encounter/{enc['id']}"}
    obs = await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "heart rate"},
            "subject": ref,
            "encounter": enc_ref,
            "effectiveDateTime": "2026-02-01T08:00:00Z",
            "valueQuantity": {"value": 7, "unit": "/min"},
        },
    )
    condition = {
        "resourceType": "Condition",
        "subject": ref,
        "encounter": enc_ref,
        "recordedDate": "2026-02-01",
        "code": {"coding": [{"system": ICD10, "code": "I10"}], "text": "hypertension"},
    }
    cond = await stored(fhir_server, condition)
    out = {"<PAT>": patient["id"], "<ENC>": enc["id"], "<OBS>": obs["id"], "<COND>": cond["id"]}
    if with_hiv:
        hiv = await stored(fhir_server, {**condition, "code": HIV_CODE})
        out["<HIVID>"] = hiv["id"]
    return out


async def _store_binary(base: str, patient: str) -> dict[str, Any]:
    """A Binary written straight to the server (HAPI answers a Binary create with its content unless
    asked for FHIR JSON; its id is in Location either way)."""
    body = {
        "resourceType": "Binary",
        "contentType": "text/plain",
        "securityContext": {"reference": patient},
        "data": base64.b64encode(BINARY_TEXT.encode()).decode(),
    }
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{base}/Binary", data=json.dumps(body), headers=headers) as r,
    ):
        assert r.status == 201, await r.text()
        location = r.headers.get("Location", "")
        return {"id": location.split("/Binary/", 1)[1].split("/", 1)[0]}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(fhir_server: Any) -> World:
    pats, deps = fhir_server.patients, fhir_server.departments
    assert [deps[pats[i]] for i in (3, 7, 8)] == ["cardiology"] * 3
    assert [deps[pats[i]] for i in (2, 4)] == ["psychiatry"] * 2
    base = fhir_server.base
    p2, p3, p7, p8 = pats[2], pats[3], pats[7], pats[8]
    async with aiohttp.ClientSession() as s:
        owned: dict[str, set[str]] = {p: set() for p in pats}
        for rtype in OWNED_TYPES:
            bundle = await _get(s, f"{base}/{rtype}?_count=1000")
            for e in bundle.get("entry") or []:
                r = e["resource"]
                p = _patient_of(r)
                if p in owned:
                    owned[p].add(r["id"])
        people = {}
        for p in pats:
            people[p] = await _get(s, f"{base}/{p}")
        observations = await _get(s, f"{base}/Observation?subject={p2}&_count=5")
        p2_obs_res = observations["entry"][0]["resource"]
        p2_obs = p2_obs_res["id"]
        p2_prac = next(
            r["reference"].split("/", 1)[1]
            for r in p2_obs_res.get("performer") or []
            if r.get("reference", "").startswith("Practitioner/")
        )
        encounters = await _get(s, f"{base}/Encounter?subject={p2}")
        p2_enc = encounters["entry"][0]["resource"]["id"]
        p8_obs_res = (await _get(s, f"{base}/Observation?subject={p8}&_count=5"))["entry"][0]["resource"]
        p8_obs = p8_obs_res["id"]
        p1_conditions = await _get(s, f"{base}/Condition?subject={pats[1]}&_count=50")
        p1_hiv = next(
            e["resource"]["id"]
            for e in p1_conditions["entry"]
            if any(c.get("code") == "B20" for c in e["resource"]["code"].get("coding") or [])
        )
        p2_conditions = await _get(s, f"{base}/Condition?subject={p2}&_count=50")
        p2_cond = next(
            e["resource"]["id"]
            for e in p2_conditions["entry"]
            if any(c.get("code") == "F32" for c in e["resource"]["code"].get("coding") or [])
        )
    hiv = await stored(
        fhir_server,
        {
            "resourceType": "Condition",
            "subject": {"reference": p7},
            "code": HIV_CODE,
            "recordedDate": "2026-03-01",
        },
    )
    focus = await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "viral load follow-up"},
            "subject": {"reference": p7},
            "focus": [{"reference": f"Condition/{hiv['id']}"}],
        },
    )
    prov = await stored(
        fhir_server,
        {
            "resourceType": "Provenance",
            "target": [{"reference": f"Condition/{hiv['id']}"}],
            "recorded": "2026-03-01T08:00:00Z",
            "agent": [{"who": {"display": "lab system"}}],
        },
    )
    bridge_member = await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "panel"},
            "subject": {"reference": p3},
            "hasMember": [{"reference": f"Observation/{p2_obs}"}],
            "derivedFrom": [{"reference": f"Observation/{p8_obs}"}],
        },
    )
    bridge_focus = await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "family history note"},
            "subject": {"reference": p2},
            "focus": [{"reference": p3}],
        },
    )
    binary = await _store_binary(base, p2)
    p2_person = people[p2]
    by_display = await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "outside lab result"},
            "subject": {"display": f"{p2_person['name'][0]['text']} {p2_person['identifier'][0]['value']}"},
        },
    )
    twin_a = await _twin(fhir_server, with_hiv=True)
    twin_b = await _twin(fhir_server, with_hiv=False)
    twin_c = await _twin(fhir_server, with_hiv=False)
    await stored(
        fhir_server,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "second reading"},
            "subject": {"reference": f"Patient/{twin_c['<PAT>']}"},
        },
    )
    async with aiohttp.ClientSession() as s:
        p8_version = (await _get(s, f"{base}/{p8}"))["meta"]["versionId"]
        hiv_version = (await _get(s, f"{base}/Condition/{hiv['id']}"))["meta"]["versionId"]
    bare = {i: pats[i].split("/", 1)[1] for i in range(len(pats))}
    variables = {
        "P2": bare[2],
        "P3": bare[3],
        "P4": bare[4],
        "P7": bare[7],
        "P8": bare[8],
        "P1": bare[1],
        "P8V": p8_version,
        "HIV": hiv["id"],
        "HIVV": hiv_version,
        "P2OBS": p2_obs,
        "P2ENC": p2_enc,
        "P2PRAC": p2_prac,
        "P8OBS": p8_obs,
        "FOCUS": focus["id"],
        "PROV": prov["id"],
        "BR1": bridge_member["id"],
        "BR2": bridge_focus["id"],
        "BIN": binary["id"],
        "DISP": by_display["id"],
        "A": twin_a["<PAT>"],
        "B": twin_b["<PAT>"],
        "C": twin_c["<PAT>"],
        "UP": base,
        "MRN2": "MRN000003",
        "MRN8": "MRN000009",
        "P2PHONE": next(t["value"] for t in people[p2]["telecom"] if t["system"] == "phone"),
        "COBS": twin_c["<OBS>"],
        "P2COND": p2_cond,
        "P1HIV": p1_hiv,
        "NOPE": "99999999" if fhir_server.kind == "hapi" else "00000000-0000-4000-8000-00000000dead",
    }
    # Ids a record the requester may see names (the bridges' references): not leaks of themselves.
    named_by_visible = {p2_obs, p8_obs, hiv["id"]}
    cardiology = {p for p in pats if deps[p] == "cardiology" and p != p8}
    withheld_care = [p for p in pats if p not in cardiology]  # other departments, and the sealed one
    twins = [twin_a["<PAT>"], twin_b["<PAT>"], twin_c["<PAT>"]]

    def people_of(ps: Iterable[str]) -> set[str]:
        return {m for p in ps for m in _person_markers(people[p])}

    def records_of(ps: Iterable[str]) -> set[str]:
        return {i for p in ps for i in owned[p]} - named_by_visible

    # The seal's case and reason, and the psychiatry patient's Binary (no insider here may read one).
    secrets = {CASE_REF, SEAL_REASON, base64.b64encode(BINARY_TEXT.encode()).decode(), BINARY_TEXT}
    # The researcher holds no study grant: her pseudonyms are under her own key (gateway/fhir/pseudonyms.py).
    keys = Pseudonymiser(PSEUDONYM_SECRET).for_study(f"operator:{ROLES['researcher'][0]['sub']}")

    def pseudo(patient_id: str) -> str:
        return keys("Patient", patient_id)

    care_ids = {p.split("/", 1)[1] for p in withheld_care} | records_of(withheld_care)
    markers = {
        "nurse": Markers(
            people_of(withheld_care) | secrets | set(HIV_MARKERS) | set(PSYCH_MARKERS), care_ids
        ),
        "physician": Markers(people_of(withheld_care) | secrets | set(PSYCH_MARKERS), care_ids),
        "researcher": Markers(
            people_of(pats) | secrets | set(HIV_MARKERS) | {TWIN_NAME, TWIN_MRN, pseudo(bare[8])},
            set(bare.values()) | set(twins) | records_of(pats),  # she sees no real id at all
        ),
    }
    everything = Markers(
        people_of(pats) | secrets | set(HIV_MARKERS) | {TWIN_NAME, TWIN_MRN},
        set(bare.values()) | set(twins) | records_of(pats),
    )
    markers.update(student=everything, vendor=everything, nurse2=markers["nurse"])
    pseudonyms = {pseudo(twin_a["<PAT>"]): "<PSEUDO>", pseudo(twin_b["<PAT>"]): "<PSEUDO>"}
    return World(fhir_server.kind, base, variables, markers, {"A": twin_a, "B": twin_b}, pseudonyms)


# --- the gateway, once per upstream and engine -----------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["embedded", "opa"])
async def gw(request: pytest.FixtureRequest, world: World, idp: Any, tmp_path_factory: Any) -> Any:
    async with sealed_world_gateway(
        upstream=world.base,
        engine=request.param,
        opa_url=request.getfixturevalue("opa_server").url if request.param == "opa" else "",
        tmp=tmp_path_factory.mktemp(f"insiders-{world.kind}-{request.param}"),
        idp=idp,
        pseudonym_secret=PSEUDONYM_SECRET,
        tokens={name: idp.token(**who) for name, (who, _) in ROLES.items()},
        sealed=f"Patient/{world.vars['P8']}",
        seal_reason=SEAL_REASON,
        case_ref=CASE_REF,
        officer_sub="u-rec-insiders",
    ) as g:
        yield g


# --- one attempt -------------------------------------------------------------------------------------

VAR_RE = re.compile(r"\{([A-Z][A-Z0-9]*)\}")


def fill(template: Any, variables: dict[str, str]) -> Any:
    if isinstance(template, str):
        return VAR_RE.sub(lambda m: variables[m.group(1)], template)
    if isinstance(template, list):
        return [fill(t, variables) for t in template]
    if isinstance(template, dict):
        return {k: fill(v, variables) for k, v in template.items()}
    return template


@dataclass(frozen=True)
class Attempt:
    name: str
    role: str
    path: str  # after the prefix, as sent on the wire (percent-encoding included)
    method: str = "GET"
    body: Any = None  # JSON (dict/list) or raw text
    headers: tuple[tuple[str, str], ...] = ()
    purpose: str | None = ""  # "" = the role's own purpose, None = no purpose header
    content_type: str = "application/fhir+json"
    prefix: str = "/fhir"
    write: bool = False  # a write into a chart the requester may not touch: must not succeed


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    text: str
    request_text: str
    request_id: str

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None


def _header_value(value: str) -> str:
    """Headers go out as latin-1: a UTF-8 value (a Chinese reason) is sent as its bytes."""
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")


async def send(gw: Gw, world: World, att: Attempt) -> Answer:
    _, own_purpose = ROLES[att.role]
    path = fill(att.path, {**world.vars, "GW": gw.origin + "/fhir"})
    headers = {"Authorization": f"Bearer {gw.tokens[att.role]}"}
    purpose = own_purpose if att.purpose == "" else att.purpose
    if purpose is not None:
        headers["X-Purpose-Of-Use"] = purpose
    for k, v in att.headers:
        headers[k] = _header_value(fill(v, world.vars))
    data: bytes | None = None
    if att.body is not None:
        body = fill(att.body, world.vars)
        data = body.encode() if isinstance(body, str) else json.dumps(body, ensure_ascii=False).encode()
        headers["Content-Type"] = att.content_type
    url = URL(gw.origin + att.prefix + path, encoded=True)
    async with gw.client.session.request(att.method, url, headers=headers, data=data) as resp:
        raw = await resp.read()
        out_headers = CIMultiDict(resp.headers)
        status = resp.status
    sent = [att.method, att.prefix + path, *(f"{k}: {v}" for k, v in headers.items() if k != "Authorization")]
    if data:
        sent.append(data.decode("utf-8", "replace"))
    answer = Answer(
        status,
        out_headers,
        raw.decode("utf-8", "replace"),
        readable("\n".join(sent)),
        out_headers.get("X-Request-Id", ""),
    )
    records = gw.records()
    where = f"{att.name} [{att.role}] {world.kind}/{gw.engine}"
    assert answer.request_id, f"{where}: no X-Request-Id ({status})"
    assert [r["request_id"] for r in records] == [answer.request_id], f"{where}: audit records {records!r}"
    if status >= 500:
        rules = {
            c.get("code")
            for issue in (answer.json() or {}).get("issue") or []
            for c in (issue.get("details") or {}).get("coding") or []
        }
        assert rules & DOCUMENTED_5XX.get(status, set()), (
            f"{where}: undocumented {status}: {answer.text[:400]}"
        )
    return answer


#: Headers that are numbers or times of the answer itself (a HAPI id can equal a Content-Length).
UNSCANNED_HEADERS = frozenset({"content-length", "date"})


def shown(answer: Answer) -> str:
    headers = [f"{k}: {readable(v)}" for k, v in answer.headers.items() if k.lower() not in UNSCANNED_HEADERS]
    return "\n".join([readable(answer.text), *headers])


def leaked(world: World, role: str, answer: Answer) -> set[str]:
    markers = world.markers[role]
    return markers.found(shown(answer)) - markers.found(answer.request_text)


def _context(text: str, marker: str) -> str:
    bounds = ID_BOUNDS if marker.isdigit() else CODE_BOUNDS if _is_code(marker) else "({})"
    m = re.search(bounds.format(re.escape(marker)), text)
    return text[max(0, m.start() - 160) : m.end() + 80] if m else ""


def no_leak(world: World, gw: Gw, att: Attempt, answer: Answer) -> None:
    found = leaked(world, att.role, answer)
    assert not found, (
        f"LEAK {att.name} [{att.role}] {world.kind}/{gw.engine} {att.method} {att.path} -> "
        f"{answer.status}: {sorted(found)} in "
        + " | ".join(_context(shown(answer), m) for m in sorted(found))
    )
    if att.write:
        assert not 200 <= answer.status < 300 or _all_entries_refused(answer), (
            f"WRITE {att.name} [{att.role}] {world.kind}/{gw.engine}: {answer.status} {answer.text[:400]}"
        )


def _all_entries_refused(answer: Answer) -> bool:
    body = answer.json() or {}
    entries = body.get("entry") or [] if body.get("resourceType") == "Bundle" else None
    return entries is not None and all(
        not str((e.get("response") or {}).get("status", "")).startswith("2") for e in entries
    )


# --- the attempts --------------------------------------------------------------------------------------

N, D, S, R, V = "nurse", "physician", "student", "researcher", "vendor"
BG = "X-Break-Glass-Reason"
REASON = "患者昏迷需紧急抢救"


def a(name: str, role: str, path: str, **kw: Any) -> Attempt:
    return Attempt(name, role, path, **kw)


def form(role: str, name: str, path: str, body: str, **kw: Any) -> Attempt:
    return Attempt(
        name, role, path, method="POST", body=body, content_type="application/x-www-form-urlencoded", **kw
    )


def batch(name: str, role: str, *entries: tuple[str, str], kind: str = "batch", **kw: Any) -> Attempt:
    body = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"request": {"method": m, "url": u}} for m, u in entries],
    }
    return Attempt(name, role, "", method="POST", body=body, **kw)


SPELLINGS = [
    # the psychiatry patient and the sealed cardiology patient, every way a search names a patient
    a(f"{who}-{spelling}", role, path.replace("{X}", "{" + who + "}"))
    for who, role in (("P2", N), ("P8", N), ("P4", D))
    for spelling, path in (
        ("patient-bare", "/Observation?patient={X}"),
        ("patient-ref", "/Observation?patient=Patient/{X}"),
        ("subject-ref", "/Observation?subject=Patient/{X}"),
        ("subject-bare", "/Observation?subject={X}"),
        ("subject-typed", "/Observation?subject:Patient={X}"),
        ("subject-typed-lower", "/Observation?subject:patient=Patient/{X}"),
        ("abs-upstream", "/Observation?patient={UP}/Patient/{X}"),
        ("abs-gateway", "/Observation?subject={GW}/Patient/{X}"),
        ("abs-foreign", "/Observation?subject=https://evil.example/fhir/Patient/{X}"),
        ("type-lowercase", "/Observation?subject=patient/{X}"),
        ("name-upper", "/Observation?SUBJECT=Patient/{X}"),
        ("name-upper-bare", "/Condition?PATIENT={X}"),
        ("versioned", "/Observation?patient=Patient/{X}/_history/1"),
        ("list", "/Observation?patient={P3},{X}"),
        ("blank-padded", "/Observation?patient=%20{X}%20"),
        ("id-list", "/Patient?_id={P3},{X}"),
        ("id-exact", "/Patient?_id:exact={X}"),
        ("read", "/Patient/{X}"),
        ("read-elements", "/Patient/{X}?_elements=name"),
        ("focus", "/Observation?focus=Patient/{X}"),
        ("encounter-subject", "/Encounter?subject={X}"),
    )
] + [
    a("id-not", N, "/Patient?_id:not={P3}&_count=50"),
    a("id-not", D, "/Patient?_id:not={P3}&_count=50"),
    form(N, "P2-post-search-form", "/Observation/_search", "patient={P2}"),
    form(N, "P8-post-search-form-encoded", "/Observation/_search", "subject=Patient%2F{P8}"),
    form(N, "P8-post-search-query-and-form", "/Observation/_search?patient={P3}", "patient={P8}"),
    form(R, "R-P8-post-search", "/Observation/_search", "subject=Patient/{P8}"),
    a("P2-mrn", N, "/Patient?identifier={MRN2}"),
    a("P8-mrn-system", N, "/Patient?identifier=urn:oid:2.16.156.emrguard.mrn%7C{MRN8}"),
    a("P2-name", N, "/Patient?name=%E6%B4%AA%E7%8E%89%E8%8B%B1"),
    a("P2-family", N, "/Patient?family=%E7%8E%8B&_count=50"),
    a("P8-name-given", D, "/Patient?given=%E6%B7%91%E8%8B%B1"),
    a("R-P8-read", R, "/Patient/{P8}"),
    a("R-P8-obs", R, "/Observation?subject=Patient/{P8}"),
    a("R-P8-mrn", R, "/Patient?identifier={MRN8}"),
    a("R-patients-all", R, "/Patient?_count=50"),
    a("R-hiv-by-subject", R, "/Condition?subject=Patient/{P7}"),
    a("R-hiv-read", R, "/Condition/{HIV}"),
    a("N-hiv-read", N, "/Condition/{HIV}"),
    a("N-hiv-by-id", N, "/Condition?_id={HIV}"),
    a("N-hiv-by-subject", N, "/Condition?subject=Patient/{P7}"),
    a("N-hiv-by-patient", N, "/Condition?patient={P7}&_count=100"),
    a("N-P2-obs-read", N, "/Observation/{P2OBS}"),
    a("N-P8-obs-read", N, "/Observation/{P8OBS}"),
    a("N-P8-obs-by-id", N, "/Observation?_id={P8OBS}"),
    a("D-P2-obs-read", D, "/Observation/{P2OBS}"),
    a("S-P3-read", S, "/Patient/{P3}"),
    a("S-patients", S, "/Patient?_count=50"),
    a("V-P3-read", V, "/Patient/{P3}"),
    a("V-observations", V, "/Observation?_count=50"),
    a("link-param", N, "/Patient?link=Patient/{P8}"),
    a("telecom", N, "/Patient?telecom={P2PHONE}"),
    a("gender-all", N, "/Patient?gender=female&_count=100"),
    a("subject-missing", N, "/Observation?subject:missing=true&_count=100"),
    a("all-observations", N, "/Observation?_count=500"),
    a("all-conditions", N, "/Condition?_count=500"),
    a("all-encounters", R, "/Encounter?_count=200"),
    a("R-observations", R, "/Observation?code=http://loinc.org%7C8867-4&_count=200"),
    a("N-display-only-subject", N, "/Observation?_id={DISP}"),
    a("D-display-only-read", D, "/Observation/{DISP}"),
    a("R-diagnostic-reports", R, "/DiagnosticReport?_count=100"),
    a("R-medication-requests", R, "/MedicationRequest?_count=100"),
    a("R-psych-code", R, "/Condition?code=http://hl7.org/fhir/sid/icd-10%7CF32"),
    a("D-psych-code", D, "/Condition?code=http://hl7.org/fhir/sid/icd-10%7CF32"),
    a("N-provenance-all", N, "/Provenance?_count=100"),
    a("N-provenance-target", N, "/Provenance?target=Condition/{HIV}"),
    a("N-provenance-read", N, "/Provenance/{PROV}"),
    a("system-type-id", N, "?_type=Patient&_id={P8}"),
    a("system-type-patient", N, "?_type=Observation&patient={P2}"),
    a("system-id", N, "?_id={P2}"),
    a("system-conditions", N, "?_type=Condition&_count=200"),
    form(N, "system-post-search", "/_search", "_type=Patient&_id={P8}"),
    a("R-system-patients", R, "?_type=Patient&_count=50"),
    a("if-none-match-read", N, "/Patient/{P8}", headers=(("If-None-Match", 'W/"1"'),)),
]

POLLUTION = [
    a("repeat", N, "/Observation?patient={P3}&patient={P2}"),
    a("repeat-reversed", N, "/Observation?patient={P8}&patient={P3}"),
    a("empty-then-other", N, "/Observation?patient=&patient={P2}"),
    a("semicolon", N, "/Observation?patient={P3};patient={P2}"),
    a("encoded-amp", N, "/Observation?patient={P3}%26patient={P2}"),
    a("encoded-amp-eq", N, "/Observation?patient={P3}%26patient%3D{P8}"),
    a("plus-joined", N, "/Observation?patient={P3}+{P2}"),
    a("encoded-hash", N, "/Observation?patient={P3}%23&patient={P2}"),
    a("encoded-hash-value", N, "/Observation?patient={P2}%23{P3}"),
    a("encoded-comma", N, "/Observation?patient={P3}%2C{P8}"),
    a("encoded-key", N, "/Observation?pat%69ent={P2}"),
    a("nul-key", N, "/Observation?patient%00={P2}"),
    a("bracket-key", N, "/Observation?patient[]={P2}"),
    a("subject-and-typed", N, "/Observation?subject=Patient/{P3}&subject:Patient={P8}"),
    a("id-repeat", N, "/Patient?_id={P3}&_id={P8}"),
    a("count-first", N, "/Observation?_count=1000&patient={P2}"),
    a("double-encoded", N, "/Observation?patient=Patient%252F{P2}"),
    a("researcher-repeat", R, "/Observation?patient={P3}&patient={P8}"),
]

COMPARTMENTS = [
    a("P2-observation", N, "/Patient/{P2}/Observation"),
    a("P8-condition", N, "/Patient/{P8}/Condition"),
    a("P2-encounter", N, "/Patient/{P2}/Encounter"),
    a("P3-with-P2-param", N, "/Patient/{P3}/Observation?patient={P2}"),
    a("P7-condition-hiv", N, "/Patient/{P7}/Condition"),
    a("lowercase-type", N, "/patient/{P2}/Observation"),
    a("encounter-compartment", N, "/Encounter/{P2ENC}/Observation"),
    a("star", N, "/Patient/{P8}/*"),
    a("researcher-P8", R, "/Patient/{P8}/Observation"),
    a("physician-P2", D, "/Patient/{P2}/MedicationRequest"),
]

HAS = [
    a("N-hiv-code", N, "/Patient?_has:Condition:subject:code=B20"),
    a(
        "N-hiv-code-id",
        N,
        "/Patient?_has:Condition:patient:code=http://hl7.org/fhir/sid/icd-10%7CB20&_id={P7}",
    ),
    a("N-has-upper", N, "/Patient?_HAS:Condition:subject:code=B20"),
    a("N-has-obs-id", N, "/Patient?_has:Observation:subject:_id={P2OBS}"),
    a("D-has-sealed", D, "/Patient?_has:Observation:patient:_id={P8OBS}"),
    a("D-has-psych", D, "/Patient?_has:Condition:subject:code=F32"),
    a("R-hiv-code", R, "/Patient?_has:Condition:subject:code=B20"),
    a("D-has-encoded", D, "/Patient?_has%3ACondition%3Asubject%3Acode=F32"),
]

CHAINS = [
    a("N-subject-name", N, "/Observation?subject.name=%E6%B4%AA%E7%8E%89%E8%8B%B1"),
    a("N-typed-identifier", N, "/Observation?subject:Patient.identifier={MRN2}"),
    a("N-patient-identifier", N, "/Observation?patient.identifier={MRN8}"),
    a("N-encoded-dot", N, "/Observation?subject%2Ename=%E7%8E%8B"),
    a("D-subject-identifier", D, "/Observation?subject.identifier={MRN2}"),
    a("D-sealed-name", D, "/Observation?patient.name=%E7%8E%8B%E6%B7%91%E8%8B%B1"),
    a("D-family-count", D, "/Condition?subject.family=%E7%8E%8B&_count=1"),
    a("D-sealed-mrn-count", D, "/Observation?subject.identifier={MRN8}&_count=1"),
    a("R-sealed-name", R, "/Observation?subject.name=%E7%8E%8B%E6%B7%91%E8%8B%B1"),
    a("S-chain", S, "/Observation?subject.identifier={MRN2}"),
]

FORMATS = [
    a("xml", N, "/Condition?subject={P7}&_format=xml"),
    a("fhir-xml", N, "/Condition?subject={P7}&_format=application/fhir%2Bxml"),
    a("XML-upper", N, "/Condition?subject={P7}&_format=XML"),
    a("json-then-xml", N, "/Condition?subject={P7}&_format=json&_format=xml"),
    a("json-semicolon-xml", N, "/Condition?subject={P7}&_format=json;xml"),
    a("html", N, "/Patient/{P8}?_format=html"),
    a("accept-xml", N, "/Condition?subject={P7}", headers=(("Accept", "application/xml"),)),
    a("accept-fhir-xml", N, "/Patient/{P2}", headers=(("Accept", "application/fhir+xml"),)),
    a("accept-mixed", N, "/Condition?subject={P7}", headers=(("Accept", "application/fhir+xml, */*;q=0.1"),)),
    a("accept-html", R, "/Patient/{P8}", headers=(("Accept", "text/html"),)),
    a("pretty-xml", D, "/Patient/{P2}?_pretty=true&_format=xml"),
]

ENCODINGS = [
    a("fullwidth-type", N, "/%EF%BC%B0atient/{P2}"),
    a("tab-in-id", N, "/Patient/%09{P8}"),
    a("slash-encoded", N, "/Patient%2F{P2}"),
    a("history-encoded", N, "/Patient/{P8}%2F_history"),
    a("dotdot-encoded", N, "/Patient/{P3}/..%2F{P2}"),
    a("dotdot-all-encoded", N, "/Patient/{P3}%2F..%2F{P8}"),
    a("dotdot-pct2e", N, "/Patient/%2e%2e/Patient/{P2}"),
    a("type-encoded", N, "/%50atient/{P2}"),
    a("query-in-path", N, "/Patient/{P8}%3F_format=xml"),
    a("hash-in-path", N, "/Patient/{P2}%23"),
    a("double-slash", N, "//Patient/{P2}"),
    a("inner-double-slash", N, "/Patient//{P8}"),
    a("dot-segment", N, "/./Patient/{P2}"),
    a("trailing-slash", N, "/Patient/{P8}/"),
    a("matrix-param", N, "/Patient/{P2};jsessionid=1"),
    a("double-encoded-slash", N, "/Patient%252F{P8}"),
    a("upper-prefix", N, "/Patient/{P2}", prefix="/FHIR"),
    a("encoded-prefix", N, "/Patient/{P8}", prefix="/%66hir"),
    a("value-encoded", N, "/Observation?patient=%50atient%2F{P8}"),
    a("nul-in-id", N, "/Patient/{P2}%00"),
]

OVERRIDES = [
    a("head", N, "/Patient/{P8}", method="HEAD"),
    a("options", N, "/Patient/{P2}", method="OPTIONS"),
    a(
        "override-get-on-post",
        N,
        "/Observation?patient={P2}",
        method="POST",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P3}"},
        },
        headers=(("X-HTTP-Method-Override", "GET"),),
        write=True,
    ),
    a("override-delete-on-get", N, "/Patient/{P8}", headers=(("X-HTTP-Method-Override", "DELETE"),)),
    a(
        "override-get-on-post-instance",
        N,
        "/Patient/{P2}",
        method="POST",
        body={"resourceType": "Patient"},
        headers=(("X-HTTP-Method-Override", "GET"),),
    ),
    form(
        N,
        "override-search-form",
        "/Patient/_search",
        "_id={P8}",
        headers=(("X-HTTP-Method-Override", "GET"),),
    ),
    a(
        "x-method-override",
        N,
        "/Observation/{P2OBS}",
        method="POST",
        body={"resourceType": "Observation"},
        headers=(("X-Method-Override", "GET"),),
    ),
    a(
        "x-http-method",
        N,
        "/Observation/{P8OBS}",
        method="POST",
        body={"resourceType": "Observation"},
        headers=(("X-HTTP-Method", "GET"),),
    ),
    a("method-param", N, "/Patient/{P2}?_method=GET", method="POST", body={"resourceType": "Patient"}),
    a(
        "override-put",
        N,
        "/Observation/{P8OBS}",
        method="PUT",
        body={
            "resourceType": "Observation",
            "id": "{P8OBS}",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P3}"},
        },
        headers=(("X-HTTP-Method-Override", "GET"),),
        write=True,
    ),
]

WRITES = [
    a(
        "if-none-exist-psych",
        N,
        "/Observation",
        method="POST",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P3}"},
        },
        headers=(("If-None-Exist", "patient={P2}"),),
        write=True,
    ),
    a(
        "if-none-exist-sealed",
        D,
        "/Observation",
        method="POST",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P3}"},
        },
        headers=(("If-None-Exist", "subject=Patient/{P8}"),),
        write=True,
    ),
    a(
        "create-focus-sealed",
        D,
        "/Observation",
        method="POST",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P3}"},
            "focus": [{"reference": "Patient/{P8}"}],
        },
        write=True,
    ),
    a(
        "patch-link-sealed",
        D,
        "/Patient/{C}",
        method="PATCH",
        body=[
            {
                "op": "add",
                "path": "/link",
                "value": [{"other": {"reference": "Patient/{P8}"}, "type": "seealso"}],
            }
        ],
        content_type="application/json-patch+json",
        write=True,
    ),
    a(
        "patch-focus-psych",
        N,
        "/Observation/{COBS}",
        method="PATCH",
        body=[{"op": "add", "path": "/focus", "value": [{"reference": "Patient/{P2}"}]}],
        content_type="application/json-patch+json",
        write=True,
    ),
    a(
        "create-into-psych",
        N,
        "/Observation",
        method="POST",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P2}"},
        },
        write=True,
    ),
    a(
        "create-into-sealed",
        N,
        "/Observation",
        method="POST",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P8}"},
        },
        write=True,
    ),
    a(
        "create-focus-psych",
        N,
        "/Observation",
        method="POST",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P3}"},
            "focus": [{"reference": "Patient/{P2}"}],
        },
        write=True,
    ),
    a(
        "create-conditional-ref",
        N,
        "/Observation",
        method="POST",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient?identifier={MRN2}"},
        },
        write=True,
    ),
    a(
        "patch-psych",
        N,
        "/Observation/{P2OBS}",
        method="PATCH",
        body=[{"op": "replace", "path": "/status", "value": "amended"}],
        content_type="application/json-patch+json",
        write=True,
    ),
    a(
        "patch-move-sealed",
        N,
        "/Observation/{P8OBS}",
        method="PATCH",
        body=[{"op": "replace", "path": "/subject", "value": {"reference": "Patient/{P3}"}}],
        content_type="application/json-patch+json",
        write=True,
    ),
    a("delete-sealed", N, "/Observation/{P8OBS}", method="DELETE", write=True),
    a(
        "conditional-update-psych",
        N,
        "/Observation?patient={P2}",
        method="PUT",
        body={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/{P2}"},
        },
        write=True,
    ),
    a("conditional-delete-psych", D, "/Observation?patient={P2}", method="DELETE", write=True),
]

BATCHES = [
    batch("revinclude", N, ("GET", "Patient?_id={P3}&_revinclude=Observation:focus")),
    batch(
        "include-iterate", N, ("GET", "Observation?_id={BR1}&_include=*&_include:iterate=Observation:subject")
    ),
    batch("researcher-patients", R, ("GET", "Patient?_count=20")),
    Attempt(
        "if-none-exist-entry",
        N,
        "",
        method="POST",
        write=True,
        body={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "x"},
                        "subject": {"reference": "Patient/{P3}"},
                    },
                    "request": {"method": "POST", "url": "Observation", "ifNoneExist": "patient={P2}"},
                }
            ],
        },
    ),
    batch("get-psych", N, ("GET", "Patient/{P2}")),
    batch("get-sealed-search", N, ("GET", "Observation?patient={P8}")),
    batch("get-hiv", N, ("GET", "Condition/{HIV}")),
    batch("get-hiv-by-subject", N, ("GET", "Condition?subject=Patient/{P7}")),
    batch("mixed", N, ("GET", "Patient/{P3}"), ("GET", "Patient/{P2}")),
    batch("lowercase-method", N, ("get", "Patient/{P8}")),
    batch("absolute-url", N, ("GET", "{UP}/Patient/{P2}")),
    batch("leading-slash", N, ("GET", "/Patient/{P8}")),
    batch("id-search", N, ("GET", "Patient?_id={P2}")),
    batch("everything", N, ("GET", "Patient/{P2}/$everything")),
    batch("dotdot", N, ("GET", "Patient/{P3}/../Patient/{P2}")),
    batch("encoded-slash", N, ("GET", "Patient%2F{P8}")),
    batch("history", N, ("GET", "Patient/{P8}/_history")),
    batch("include", N, ("GET", "Observation?_id={BR1}&_include=Observation:has-member")),
    batch("psych-obs-by-id", N, ("GET", "Observation?_id={P2OBS}")),
    batch("researcher-sealed", R, ("GET", "Patient/{P8}")),
    batch("physician-psych", D, ("GET", "Observation?subject={P2}")),
    batch("student", S, ("GET", "Patient/{P3}")),
    Attempt(
        "transaction-write-psych",
        N,
        "",
        method="POST",
        write=True,
        body={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:4a0d1c8e-0000-4000-8000-000000000001",
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "x"},
                        "subject": {"reference": "Patient/{P2}"},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            ],
        },
    ),
    Attempt(
        "nested-batch",
        N,
        "",
        method="POST",
        body={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Bundle",
                        "type": "batch",
                        "entry": [{"request": {"method": "GET", "url": "Patient/{P2}"}}],
                    },
                    "request": {"method": "POST", "url": "/"},
                }
            ],
        },
    ),
]

GRAPHQL = [
    a(
        "post-base",
        N,
        "/$graphql",
        method="POST",
        body={"query": '{ Patient(id: "{P2}") { name { text } } }'},
        content_type="application/json",
    ),
    a("get-base", N, "/$graphql?query=%7BPatient(id:%22{P8}%22)%7Bname%7Btext%7D%7D%7D"),
    a("instance", N, "/Patient/{P2}/$graphql?query=%7Bname%7Btext%7D%7D"),
    a(
        "graphql-content-type",
        D,
        "/$graphql",
        method="POST",
        body="{ PatientList { id name { text } } }",
        content_type="application/graphql",
    ),
    a("case-variant", N, "/$GraphQL?query=%7BPatientList%7Bid%7D%7D"),
    a(
        "researcher",
        R,
        "/$graphql",
        method="POST",
        body={"query": '{ ConditionList(code: "B20") { id } }'},
        content_type="application/json",
    ),
    a("vendor", V, "/$graphql?query=%7BPatientList%7Bid%7D%7D"),
]

EXPORTS = [
    a("system", N, "/$export", headers=(("Prefer", "respond-async"),)),
    a("system-types", D, "/$export?_type=Patient,Condition", headers=(("Prefer", "respond-async"),)),
    a("patient-level", N, "/Patient/$export?_type=Patient"),
    a("instance", N, "/Patient/{P2}/$export"),
    a("group", D, "/Group/g1/$export?_type=Observation"),
    a(
        "post-parameters",
        R,
        "/$export",
        method="POST",
        body={"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Patient"}]},
    ),
    a("vendor", V, "/$export?_type=Patient"),
]

OPERATIONS = [
    a("validate-psych-patient", D, "/Patient/{P2}/$validate"),
    a("validate-nurse-hiv", N, "/Condition/{HIV}/$validate"),
    a("validate-nurse-unrelated-hiv", N, "/Condition/{P1HIV}/$validate"),
    a("validate-researcher-psych", R, "/Condition/{P2COND}/$validate"),
    a("meta-psych", D, "/Observation/{P2OBS}/$meta"),
    a("lastn-psych", N, "/Observation/$lastn?patient={P2}"),
    a("filter-sealed", D, "/Observation?_filter=subject%20eq%20Patient/{P8}"),
    a("filter-mrn", D, "/Patient?_filter=identifier%20eq%20{MRN2}"),
    a("filter-nurse", N, "/Observation?_filter=subject%20eq%20Patient/{P2}"),
    a(
        "subject-identifier-modifier",
        D,
        "/Observation?subject:identifier=urn:oid:2.16.156.emrguard.mrn%7C{MRN2}",
    ),
    a("subject-identifier-sealed", N, "/Observation?subject:identifier={MRN8}"),
    a(
        "researcher-include-subject",
        R,
        "/Observation?code=http://loinc.org%7C8867-4&_include=Observation:subject",
    ),
    a("researcher-revinclude", R, "/Patient?_count=5&_revinclude=Observation:subject"),
]

EVERYTHING = [
    a("own", N, "/Patient/{P3}/$everything?_count=500"),
    a("physician-own-hiv", D, "/Patient/{P7}/$everything?_count=500"),
    a("psych", N, "/Patient/{P2}/$everything"),
    a("sealed", N, "/Patient/{P8}/$everything"),
    a("type-level", N, "/Patient/$everything?_count=50"),
    a("own-with-other-param", N, "/Patient/{P3}/$everything?patient={P2}"),
    a(
        "post-parameters",
        N,
        "/Patient/$everything",
        method="POST",
        body={
            "resourceType": "Parameters",
            "parameter": [{"name": "patient", "valueReference": {"reference": "Patient/{P2}"}}],
        },
    ),
    a("hiv-patient", N, "/Patient/{P7}/$everything?_count=500"),
    a("encounter", N, "/Encounter/{P2ENC}/$everything"),
    a("physician-psych", D, "/Patient/{P4}/$everything"),
    a("physician-sealed-btg", D, "/Patient/{P8}/$everything", purpose="BTG", headers=((BG, REASON),)),
    a("researcher-sealed", R, "/Patient/{P8}/$everything"),
    a("student", S, "/Patient/{P3}/$everything"),
]

BINARIES = [
    a("read", N, "/Binary/{BIN}"),
    a("search", N, "/Binary?_id={BIN}"),
    a("physician-read", D, "/Binary/{BIN}"),
    a("researcher-read", R, "/Binary/{BIN}"),
    a("octet-stream", N, "/Binary/{BIN}", headers=(("Accept", "application/octet-stream"),)),
    a("history", D, "/Binary/{BIN}/_history"),
    a(
        "batch",
        N,
        "",
        method="POST",
        body={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": "Binary/{BIN}"}}],
        },
    ),
]

HISTORY = [
    a("researcher-instance", R, "/Patient/{P3}/_history"),
    a("system", N, "/_history?_count=100"),
    a("system-default", S, "/_history"),
    a("type-condition", N, "/Condition/_history?_count=200"),
    a("type-patient", N, "/Patient/_history?_count=100"),
    a("type-observation", D, "/Observation/_history?_count=100"),
    a("instance-hiv", N, "/Condition/{HIV}/_history"),
    a("vread-hiv", N, "/Condition/{HIV}/_history/{HIVV}"),
    a("instance-sealed", N, "/Patient/{P8}/_history"),
    a("vread-sealed", N, "/Patient/{P8}/_history/{P8V}"),
    a("instance-sealed-obs", N, "/Observation/{P8OBS}/_history"),
    a("instance-psych", D, "/Patient/{P2}/_history"),
    a("researcher-sealed", R, "/Patient/{P8}/_history/{P8V}"),
    a("vendor-type", V, "/Patient/_history"),
    a("since", N, "/Condition/_history?_since=2000-01-01T00:00:00Z&_count=200"),
]

INCLUDES = [
    a("has-member", N, "/Observation?_id={BR1}&_include=Observation:has-member"),
    a("derived-from-sealed", N, "/Observation?_id={BR1}&_include=Observation:derived-from"),
    a("include-star", N, "/Observation?_id={BR1}&_include=*"),
    a("include-iterate", N, "/Observation?_id={BR1}&_include:iterate=Observation:has-member"),
    a(
        "include-two-hops",
        N,
        "/Observation?_id={BR1}&_include=Observation:has-member&_include:iterate=Observation:subject",
    ),
    a("include-two-hops-physician", D, "/Observation?_id={BR1}&_include=*&_include:iterate=*"),
    a("focus-hiv", N, "/Observation?_id={FOCUS}&_include=Observation:focus"),
    a("focus-hiv-by-patient", R, "/Observation?subject={P7}&_include=Observation:focus&_count=100"),
    a("revinclude-focus", N, "/Patient?_id={P3}&_revinclude=Observation:focus"),
    a("revinclude-star", N, "/Patient?_id={P3}&_revinclude=*"),
    a("revinclude-hiv", N, "/Patient?_id={P7}&_revinclude=Condition:subject"),
    a("revinclude-provenance", N, "/Condition?subject={P7}&_revinclude=Provenance:target"),
    a(
        "revinclude-sealed",
        D,
        "/Patient?_id={P3}&_revinclude=Observation:focus&_revinclude=Observation:subject",
    ),
    a("practitioner-revinclude", N, "/Practitioner?_id={P2PRAC}&_revinclude=Encounter:participant"),
    a("practitioner-revinclude-obs", D, "/Practitioner?_id={P2PRAC}&_revinclude=Observation:performer"),
    a("include-subject-psych", D, "/Observation?_id={BR2}&_include=Observation:subject"),
    a("researcher-revinclude", R, "/Patient?_id={P8}&_revinclude=Observation:subject"),
]

SEALED = [
    a("read", N, "/Patient/{P8}"),
    a("physician-read", D, "/Patient/{P8}"),
    a("id-search", D, "/Patient?_id={P8}"),
    a("identifier", D, "/Patient?identifier={MRN8}"),
    a("name", D, "/Patient?name=%E7%8E%8B%E6%B7%91%E8%8B%B1"),
    a("family-given", N, "/Patient?family=%E7%8E%8B&given=%E6%B7%91%E8%8B%B1"),
    a("obs-by-id-physician", D, "/Observation/{P8OBS}"),
    a("obs-search", D, "/Observation?subject={P8}&_count=1"),
    a("encounter", D, "/Encounter?patient={P8}"),
    a("etreat-reason", D, "/Patient/{P8}", purpose="ETREAT", headers=((BG, REASON),)),
    a("btg-reason-nurse", N, "/Observation?patient={P8}", purpose="BTG", headers=((BG, REASON),)),
    a(
        "btg-batch",
        D,
        "",
        method="POST",
        purpose="BTG",
        headers=((BG, REASON),),
        body={
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": "Patient/{P8}"}}],
        },
    ),
    a("cardiology-encounters", N, "/Encounter?service-type=cardiology&_count=200"),
    a("all-patients", D, "/Patient?_count=100"),
    a("conditions-all", D, "/Condition?_count=200"),
]

BREAK_GLASS = [
    a("etreat-none", N, "/Patient/{P2}", purpose="ETREAT"),
    a("btg-none", N, "/Observation?patient={P2}", purpose="BTG"),
    a("btg-empty", N, "/Patient/{P2}", purpose="BTG", headers=((BG, ""),)),
    a("btg-blank", N, "/Patient/{P2}", purpose="BTG", headers=((BG, "    "),)),
    a("btg-dots", D, "/Patient/{P4}", purpose="BTG", headers=((BG, "...."),)),
    a("btg-zero-width", N, "/Patient/{P2}", purpose="BTG", headers=((BG, "\u200b\u200b\u200b\u200b\u200b"),)),
    a("btg-three-chars", N, "/Patient/{P2}", purpose="ETREAT", headers=((BG, "急急急"),)),
    a(
        "btg-hangul-filler",
        N,
        "/Patient/{P2}",
        purpose="BTG",
        headers=((BG, "\u3164\u3164\u3164\u3164\u3164"),),
    ),
    a("treat-with-reason", N, "/Patient/{P2}", headers=((BG, REASON),)),
    a("no-purpose", N, "/Patient/{P2}", purpose=None),
    a("lowercase-purpose", N, "/Patient/{P2}", purpose="btg"),
    a("researcher-btg", R, "/Patient/{P8}", purpose="BTG", headers=((BG, REASON),)),
    a("student-btg", S, "/Patient/{P2}", purpose="BTG", headers=((BG, REASON),)),
    a("vendor-etreat", V, "/Patient/{P2}", purpose="ETREAT", headers=((BG, REASON),)),
    a(
        "btg-search-across",
        N,
        "/Patient?name=%E6%B4%AA%E7%8E%89%E8%8B%B1",
        purpose="BTG",
        headers=((BG, REASON),),
    ),
    a(
        "btg-revinclude",
        N,
        "/Patient?_id={P3}&_revinclude=Observation:focus",
        purpose="BTG",
        headers=((BG, REASON),),
    ),
]

ADMIN = [
    a("seals", N, "/seals", prefix="/admin"),
    a("seal-history", D, "/seals/history?patient=Patient/{P8}", prefix="/admin"),
    a("alerts", N, "/alerts", prefix="/admin"),
    a("audit-search", R, "/audit?patient=Patient/{P8}", prefix="/admin"),
    a("audit-export", V, "/audit/export", prefix="/admin"),
    a(
        "unseal",
        D,
        "/seals/unseal",
        method="POST",
        prefix="/admin",
        body={"patient": "Patient/{P8}", "reason": "我是主治医生"},
        content_type="application/json",
    ),
    a(
        "explain",
        S,
        "/policy/explain",
        method="POST",
        prefix="/admin",
        body={},
        content_type="application/json",
    ),
]

CLASSES = {
    "spelling": SPELLINGS,
    "pollution": POLLUTION,
    "compartment": COMPARTMENTS,
    "has": HAS,
    "chain": CHAINS,
    "format": FORMATS,
    "encoding": ENCODINGS,
    "override": OVERRIDES,
    "write": WRITES,
    "batch": BATCHES,
    "graphql": GRAPHQL,
    "export": EXPORTS,
    "everything": EVERYTHING,
    "operation": OPERATIONS,
    "binary": BINARIES,
    "history": HISTORY,
    "include": INCLUDES,
    "sealed": SEALED,
    "break-glass": BREAK_GLASS,
    "admin": ADMIN,
}
ATTEMPTS = [(cls, att) for cls, atts in CLASSES.items() for att in atts]


@pytest.mark.parametrize(("cls", "att"), ATTEMPTS, ids=[f"{c}:{a.name}:{a.role}" for c, a in ATTEMPTS])
async def test_an_insider_learns_nothing_withheld(gw: Gw, world: World, cls: str, att: Attempt) -> None:
    answer = await send(gw, world, att)
    no_leak(world, gw, att, answer)


async def test_the_judge_sees_a_disclosure(gw: Gw, world: World) -> None:
    """The judge is not blind: what a physician sees by breaking the glass for a psychiatry patient,
    and an infectious-disease patient's HIV diagnosis, count as leaks under the markers the insiders
    are judged by (names, MRNs, record ids — numeric on HAPI —, the HIV code)."""
    urgent = dict(purpose="BTG", headers=((BG, REASON),))
    att = a("judge-psych", D, "/Patient/{P2}", **urgent)
    answer = await send(gw, world, att)
    assert answer.status == 200 and {"MRN000003", "洪玉英"} <= leaked(world, D, answer)
    att = a("judge-records", D, "/Observation?patient={P2}&_count=5", **urgent)
    answer = await send(gw, world, att)
    assert answer.status == 200 and len(leaked(world, D, answer)) >= 5
    att = a("judge-hiv", D, "/Condition?patient={P1}&_count=50", **urgent)
    answer = await send(gw, world, att)
    assert (
        answer.status == 200 and "B20" in leaked(world, N, answer) and "B20" not in leaked(world, D, answer)
    )


# --- search oracles: twins that differ only in a withheld HIV diagnosis -------------------------------

ORACLES = {
    "subject": "/Condition?subject=Patient/{T}",
    "count-2": "/Condition?patient={T}&_count=2",
    "count-3": "/Condition?subject={T}&_count=3",
    "total-accurate": "/Condition?patient={T}&_total=accurate",
    "count-0": "/Condition?patient={T}&_count=0",
    "summary-count": "/Condition?patient={T}&_summary=count",
    "code-b20": "/Condition?patient={T}&code=http://hl7.org/fhir/sid/icd-10%7CB20",
    "code-not-i10": "/Condition?patient={T}&code:not=http://hl7.org/fhir/sid/icd-10%7CI10",
    "everything": "/Patient/{T}/$everything",
    "everything-count-1": "/Patient/{T}/$everything?_count=1",
    "compartment": "/Patient/{T}/Condition",
    "revinclude": "/Patient?_id={T}&_revinclude=Condition:subject",
    "has-b20": "/Patient?_has:Condition:subject:code=B20&_id={T}",
    "elements": "/Condition?subject={T}&_elements=id",
    "summary-true": "/Condition?subject={T}&_summary=true",
    "encounter-revinclude": "/Encounter?subject={T}&_revinclude=Condition:encounter",
    "observations": "/Observation?subject={T}",
    "include-encounter": "/Condition?subject={T}&_include=Condition:encounter",
    "clinical-status": "/Condition?subject={T}&clinical-status:missing=true",
}
#: HAPI names a search's answer by a fresh uuid (Content-Location: BASE/Bundle/<uuid>).
SEARCH_BUNDLE_RE = re.compile(r"Bundle/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VOLATILE_META = frozenset({"lastUpdated", "versionId", "source", "author"})
STABLE_HEADERS = ("Content-Type", "Location", "Content-Location")


def normalised(world: World, ids: dict[str, str], gw: Gw, answer: Answer) -> str:
    """The answer without what differs between any two answers: request ids, the ids the requester
    sent (``ids``: placeholder -> id) and the twins' pseudonyms, versions and times, cursor tokens,
    watermarks."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k in VOLATILE_META or (k == "id" and node.get("resourceType") == "Bundle"):
                    continue
                if k in ("timestamp", "lastModified", "etag"):
                    continue
                out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return remove_marks(node)
        return node

    body = answer.json()
    text = json.dumps(walk(body), ensure_ascii=False, sort_keys=True) if body is not None else answer.text
    headers = "\n".join(f"{h}: {answer.headers[h]}" for h in STABLE_HEADERS if h in answer.headers)
    text = f"{answer.status}\n{headers}\n{text}".replace(answer.request_id, "<request-id>")
    text = unquote(CURSOR_RE.sub("_cursor=<cursor>", text).replace(gw.origin, "<gateway>"))
    text = SEARCH_BUNDLE_RE.sub("Bundle/<search>", text)
    for pseudonym, placeholder in world.pseudonyms.items():
        text = text.replace(pseudonym, placeholder)
    for placeholder, rid in sorted(ids.items(), key=lambda kv: -len(kv[1])):
        if placeholder != "<HIVID>":
            text = re.sub(r"(?<![0-9A-Za-z\-])" + re.escape(rid) + r"(?![0-9A-Za-z\-])", placeholder, text)
    return text


def _same(world: World, gw: Gw, name: str, role: str, pair: list[tuple[dict[str, str], Answer]]) -> None:
    (ids_with, with_), (ids_without, without) = pair
    left, right = normalised(world, ids_with, gw, with_), normalised(world, ids_without, gw, without)
    assert left == right, (
        f"ORACLE {name} [{role}] {world.kind}/{gw.engine}: the answers differ\n{left[:1500]}\n---\n{right[:1500]}"
    )


async def _ask_twin(gw: Gw, world: World, role: str, name: str, twin: str, path: str) -> Answer:
    ids = world.twins[twin]
    variables = {"T": ids["<PAT>"], "TENC": ids["<ENC>"]}
    att = Attempt(f"oracle-{name}", role, fill(path, variables))
    answer = await send(gw, world, att)
    no_leak(world, gw, att, answer)
    if role in ("nurse", "researcher"):
        assert ids.get("<HIVID>", "<none>") not in answer.text, (
            f"oracle-{name}: the HIV record's id is released"
        )
    return answer


ORACLE_CASES = [(role, name) for role in ("nurse", "researcher") for name in ORACLES]


@pytest.mark.parametrize(("role", "name"), ORACLE_CASES, ids=[f"{r}:{n}" for r, n in ORACLE_CASES])
async def test_a_search_does_not_tell_whether_a_withheld_record_exists(
    gw: Gw, world: World, role: str, name: str
) -> None:
    path = ORACLES[name]
    pair = [(world.twins[t], await _ask_twin(gw, world, role, name, t, path)) for t in ("A", "B")]
    _same(world, gw, name, role, pair)


#: A withheld record's id, or a patient's identifier, against one that names nothing at all:
#: (role, path with {V}, the withheld one, the missing one).
EXISTENCE = {
    "psych-patient-read": ("nurse", "/Patient/{V}", "{P2}", "{NOPE}"),
    "psych-everything": ("nurse", "/Patient/{V}/$everything", "{P2}", "{NOPE}"),
    "psych-obs-search": ("nurse", "/Observation?patient={V}", "{P2}", "{NOPE}"),
    "psych-history": ("nurse", "/Patient/{V}/_history", "{P2}", "{NOPE}"),
    "psych-compartment": ("physician", "/Patient/{V}/Condition", "{P4}", "{NOPE}"),
    "student-psych": ("student", "/Patient/{V}", "{P2}", "{NOPE}"),
}


@pytest.mark.parametrize("name", list(EXISTENCE))
async def test_an_answer_does_not_tell_whether_a_withheld_record_exists(
    gw: Gw, world: World, name: str
) -> None:
    role, path, present, missing = EXISTENCE[name]
    pair = []
    for value in (present, missing):
        value = fill(value, world.vars)
        att = Attempt(f"exists-{name}", role, path.replace("{V}", value))
        answer = await send(gw, world, att)
        no_leak(world, gw, att, answer)
        pair.append(({"<V>": unquote(value)}, answer))
    _same(world, gw, name, role, pair)


# --- paging cursors replayed ---------------------------------------------------------------------------

REPLAYS = {
    "other-nurse": ("nurse2", None, ""),
    "researcher": ("researcher", None, ""),
    "student": ("student", None, ""),
    "vendor": ("vendor", None, ""),
    "physician": ("physician", None, ""),
    "own-other-purpose": ("nurse", "ETREAT", ""),
    "own-with-extra-param": ("nurse", None, "&patient={P2}"),
    "own-tampered": ("nurse", None, "TAMPER"),
    "own-type-path": ("nurse", None, "PATH"),
}


def _cursor_of(answer: Answer) -> str:
    body = answer.json() or {}
    link = next(lk["url"] for lk in body.get("link") or [] if lk.get("relation") == "next")
    return link.split("?", 1)[1]


@pytest.mark.parametrize("case", list(REPLAYS))
async def test_a_paging_cursor_opens_nothing_for_another(gw: Gw, world: World, case: str) -> None:
    # The nurse's search of her own patient's page: replayed, it must open nothing for anyone else,
    # nor for the nurse under another purpose or with anything added.
    issued = await send(gw, world, Attempt("issue", "nurse", "/Observation?patient={P3}&_count=2"))
    assert issued.status == 200
    query = _cursor_of(issued)
    role, purpose, twist = REPLAYS[case]
    path = f"?{query}"
    if twist == "TAMPER":
        token = query.split("=", 1)[1]
        path = f"?_cursor={token[:-3]}{'AAA' if not token.endswith('AAA') else 'BBB'}"
    elif twist == "PATH":
        path = f"/Observation?{query}"
    elif twist:
        path += twist
    att = Attempt(f"replay-{case}", role, path, purpose=purpose or "")
    answer = await send(gw, world, att)
    no_leak(world, gw, att, answer)
    assert answer.status in (400, 403), f"replay-{case} [{role}] {world.kind}/{gw.engine}: {answer.status}"


async def test_a_cursor_issued_before_a_seal_opens_nothing_after_it(gw: Gw, world: World, idp: Any) -> None:
    c = world.vars["C"]
    issued = await send(gw, world, Attempt("issue-c", "nurse", f"/Observation?patient={c}&_count=1"))
    assert issued.status == 200
    query = _cursor_of(issued)  # the twin has two Observations: a second page
    officer = idp.token("records_officer", sub="u-rec-insiders")
    resp = await gw.client.post(
        "/admin/seals",
        json={"patient": f"Patient/{c}", "reason": SEAL_REASON, "case_ref": CASE_REF},
        headers={"Authorization": f"Bearer {officer}"},
    )
    assert resp.status == 201
    gw.records()
    for name, path in (("after-seal-page", f"?{query}"), ("after-seal-search", f"/Observation?patient={c}")):
        att = Attempt(name, "nurse", path)
        answer = await send(gw, world, att)
        no_leak(world, gw, att, answer)
        assert answer.status == 403 and c not in json.dumps((answer.json() or {}).get("entry") or []), (
            f"{name} {world.kind}/{gw.engine}: {answer.status} {answer.text[:300]}"
        )
