"""The bench's population and its request lists (bench/run.py; described in bench/README.md).

Patients come from devtools/synthetic.py. Generating one (carebundle's correlated draws) costs
~0.1 s of CPU, so 1,000 of them would cost the run minutes: the bench generates ``TEMPLATES``
bundles and derives the others from them — patient ``i`` is template ``i % TEMPLATES`` with its
own MRN, name, urn:uuids and the department ``department_for(i)`` — and keeps ``OBSERVATIONS_KEPT``
Observations of each (no DiagnosticReports), ~12 resources a patient. ``TEMPLATES`` is a multiple
of 10, so patient ``i`` keeps the sensitivity (HIV, psychiatric) and the sex synthetic.py gives it.

The mix: ``len(operators())`` operators (nurses, physicians and residents of every department,
pharmacists, records officers, researchers, students without a rotation), patients drawn by a
Zipf law, reads and searches of several types, purposes per role, and the refusals a real day has
(a nurse opening another department's patient, a pharmacist asking for diagnoses, a researcher
naming a real id, a student without a rotation). Everything is a pure function of the seed.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import random
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from faker import Faker

from devtools import synthetic
from devtools.tokens import mint

SEED = 262
TEMPLATES = 40
OBSERVATIONS_KEPT = 6
KEPT_TYPES = frozenset(
    {
        "Patient",
        "Practitioner",
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "AllergyIntolerance",
    }
)
DEPARTMENTS = tuple(sorted(synthetic.DEPARTMENTS))
ZIPF_S = 1.0
_URN = re.compile(rb"urn:uuid:([0-9a-f-]{36})")
_NS = uuid.UUID("0b6f2d8e-6c1e-4d53-9f0e-6a3c2b1e9d42")

JSON = dict[str, Any]


@dataclass
class Patient:
    index: int
    dept: str
    sensitivity: str | None
    ref: str = ""
    ids: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))


@dataclass(frozen=True)
class Operator:
    sub: str
    role: str
    dept: str
    purpose: str


# --- the population -------------------------------------------------------------------------


def templates(count: int = TEMPLATES, seed: int = SEED) -> list[JSON]:
    return [synthetic.make_patient_bundle(i, seed) for i in range(count)]


def _derive(template: JSON, index: int, fake: Faker) -> JSON:
    """Patient ``index`` from its template: new urn:uuids, MRN, name and department."""
    raw = _URN.sub(
        lambda m: b"urn:uuid:" + str(uuid.uuid5(_NS, f"{m.group(1).decode()}:{index}")).encode(),
        orjson.dumps(template),
    )
    bundle: JSON = orjson.loads(raw)
    for e in bundle["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Patient":
            r["identifier"][0]["value"] = synthetic.mrn_for(index)
            fake.seed_instance(SEED * 1_000_003 + index)
            female = r.get("gender") == "female"
            r["name"] = [synthetic._chinese_name(fake, female)]
            r["text"] = synthetic._narrative(  # as synthetic.py writes it
                f"{r['name'][0]['text']}，{'女' if female else '男'}，出生日期 {r.get('birthDate', '未知')}。"
            )
        elif r["resourceType"] == "Encounter":
            dept = synthetic.department_for(index, SEED)
            r["serviceType"] = {
                "coding": [synthetic._coding(synthetic.DEPARTMENT_SYSTEM, dept, synthetic.DEPARTMENTS[dept])],
                "text": synthetic.DEPARTMENTS[dept],
            }
    return bundle


def _trim(bundle: JSON, observations: int) -> JSON:
    """The kept types, and ``observations`` Observations spread over the chart (vitals and labs)."""
    obs = [i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation"]
    step = max(1, len(obs) // observations)
    keep_obs = set(obs[::step][:observations])
    kept = [
        e
        for i, e in enumerate(bundle["entry"])
        if e["resource"]["resourceType"] in KEPT_TYPES
        and (e["resource"]["resourceType"] != "Observation" or i in keep_obs)
    ]
    return {**bundle, "entry": kept}


def codes(bundles: list[JSON], resource_type: str) -> list[str]:
    """``system|code`` of the first coding of every ``resource_type`` in the bundles, most used first."""
    seen: collections.Counter[str] = collections.Counter()
    for b in bundles:
        for e in b["entry"]:
            r = e["resource"]
            if r["resourceType"] == resource_type and r.get("code", {}).get("coding"):
                c = r["code"]["coding"][0]
                seen[f"{c.get('system', '')}|{c['code']}"] += 1
    return [c for c, _ in seen.most_common()]


def patient_bundles(count: int, tmpl: list[JSON]) -> list[JSON]:
    fake = Faker("zh_CN")
    out = []
    for i in range(count):
        t = tmpl[i % len(tmpl)]
        out.append(_trim(t if i < len(tmpl) else _derive(t, i, fake), OBSERVATIONS_KEPT))
    return out


def search_bundle(index: int, tmpl: list[JSON], entries: int = 100) -> JSON:
    """A patient with exactly ``entries`` Observations: the template's own lab and vital signs
    (34 distinct codes) repeated over visits a day apart, so the answer has as many distinct
    entries as a real chart, not one code a hundred times."""
    bundle = _derive(tmpl[index % len(tmpl)], index, Faker("zh_CN"))
    observations = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    others = [e for e in bundle["entry"] if e["resource"]["resourceType"] in KEPT_TYPES - {"Observation"}]
    made = []
    for n, e in enumerate(itertools.islice(itertools.cycle(observations), entries)):
        visit = n // len(observations)
        r = orjson.loads(orjson.dumps(e["resource"]))
        r["effectiveDateTime"] = f"2026-01-{1 + visit:02d}T09:00:00Z"
        if "valueQuantity" in r and isinstance(r["valueQuantity"].get("value"), int | float):
            r["valueQuantity"]["value"] = round(r["valueQuantity"]["value"] * (1 + 0.01 * visit), 2)
        made.append(
            {"fullUrl": f"urn:uuid:{uuid.uuid5(_NS, f'search:{n}')}", "resource": r, "request": e["request"]}
        )
    return {**bundle, "entry": others + made}


def _location(entry: JSON) -> str:
    loc = str((entry.get("response") or {}).get("location") or "")
    parts = [p for p in loc.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2:
        raise RuntimeError(f"no location in transaction response entry: {entry}")
    return f"{parts[-2]}/{parts[-1]}"


async def _post(session: aiohttp.ClientSession, base: str, entries: list[JSON]) -> list[str]:
    body = orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    async with session.post(
        base, data=body, headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    ) as r:
        text = await r.read()
        if r.status != 200:
            raise RuntimeError(f"seeding: HTTP {r.status}: {text[:500]!r}")
    answer = orjson.loads(text)
    got = answer.get("entry") or []
    if len(got) != len(entries):
        raise RuntimeError(f"seeding: {len(got)} response entries for {len(entries)}")
    return [_location(e) for e in got]


async def seed(
    base: str, bundles: list[JSON], first_index: int = 0, per_transaction: int = 10, parallel: int = 2
) -> list[Patient]:
    """POST the bundles, ``per_transaction`` patients to a transaction; the patients with the ids
    the server gave each of their resources."""
    patients = [
        Patient(
            first_index + i,
            synthetic.department_for(first_index + i, SEED),
            synthetic.sensitivity_for(first_index + i),
        )
        for i in range(len(bundles))
    ]
    groups = [
        list(range(k, min(k + per_transaction, len(bundles))))
        for k in range(0, len(bundles), per_transaction)
    ]
    gate = asyncio.Semaphore(parallel)

    async def one(session: aiohttp.ClientSession, group: list[int]) -> None:
        entries, owner = [], []
        for i in group:
            entries += bundles[i]["entry"]
            owner += [i] * len(bundles[i]["entry"])
        async with gate:
            locations = await _post(session, base, entries)
        for i, loc in zip(owner, locations, strict=True):
            kind = loc.split("/")[0]
            if kind == "Patient":
                patients[i].ref = loc
            patients[i].ids[kind].append(loc)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        await asyncio.gather(*(one(session, g) for g in groups))
    return patients


# --- the operators --------------------------------------------------------------------------


def operators() -> list[Operator]:
    """57 personal accounts (II.1) of a hospital of six departments."""
    ops: list[Operator] = []
    for dept in DEPARTMENTS:
        ops += [Operator(f"nurse-{dept}-{n}", "nurse", dept, "TREAT") for n in range(1, 5)]
        ops += [Operator(f"dr-{dept}-{n}", "physician", dept, "TREAT") for n in range(1, 4)]
        ops.append(Operator(f"resident-{dept}", "resident", dept, "TREAT"))
    ops += [Operator(f"pharmacist-{n}", "pharmacist", "pharmacy", "TREAT") for n in range(1, 4)]
    ops += [Operator(f"records-{n}", "records_officer", "", "HOPERAT") for n in range(1, 3)]
    ops += [Operator(f"researcher-{n}", "researcher", "", "HRESCH") for n in range(1, 3)]
    ops += [Operator(f"student-{n}", "student", "cardiology", "TRAIN") for n in range(1, 3)]
    return ops


def tokens_for(ops: Iterable[Operator], key: Any, kid: str, issuer: str, audience: str) -> dict[str, str]:
    return {
        o.sub: mint(
            key,
            kid=kid,
            issuer=issuer,
            audience=audience,
            sub=o.sub,
            roles=[o.role],
            dept=o.dept,
            ttl=4 * 3600,
        )
        for o in ops
    }


# --- the requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    path: str
    sub: str
    purpose: str
    kind: str  # for the summary: "<who>: <what>"
    patient: int
    break_glass: str = ""


class Zipf:
    """Patient ranks 1..n with P(rank k) ∝ k^-s; rank k is a fixed random patient (not index k)."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        self.cum = list(itertools.accumulate(1 / (k**s) for k in range(1, n + 1)))
        self.order = list(range(n))
        rng.shuffle(self.order)

    def draw(self, rng: random.Random) -> int:
        return self.order[bisect.bisect_left(self.cum, rng.random() * self.cum[-1])]


def _weighted(rng: random.Random, table: Sequence[tuple[float, str]]) -> str:
    x = rng.random() * sum(w for w, _ in table)
    for w, v in table:
        x -= w
        if x < 0:
            return v
    return table[-1][1]


#: Who asks (the patient drawn first): the operator's relation to the patient, and its share.
WHO = [
    (76, "own department"),  # nurse, physician or resident of a department that treats the patient
    (5, "other department"),  # refused: no care relationship (I.4)
    (1, "break-glass"),  # ETREAT with a reason, another department: allowed, alerted (II.3)
    (2, "physician teaching"),  # TRAIN: de-identified answers, grade 3 at most
    (5, "pharmacist"),  # no Condition (refused), others graded to 4
    (4, "records officer"),  # HOPERAT
    (5, "researcher"),  # searches by content, pseudonymised; a real id refused
    (2, "student"),  # TRAIN without a rotation grant: refused (II.1)
]
CLINICAL_ROLES = [(55, "nurse"), (35, "physician"), (10, "resident")]
#: What a clinician (or a records officer) asks about a patient.
CLINICAL = [
    (25, "Patient read"),
    (25, "Observation search"),
    (12, "Condition search"),
    (12, "Encounter search"),
    (12, "Observation read"),
    (5, "Condition read"),
    (5, "Encounter read"),
    (4, "Observation search by code"),
]
PHARMACIST = [
    (40, "Patient read"),
    (40, "Observation search"),
    (10, "Encounter search"),
    (10, "Condition search"),
]
RESEARCHER = [(80, "Condition search by code"), (20, "Patient read by real id")]
BREAK_GLASS_REASON = "unconscious on arrival, no relatives reachable"


def _about(rng: random.Random, p: Patient, what: str, observation_codes: list[str]) -> str:
    """The path of ``what`` about patient ``p`` (a read by id of a type it lacks: a search)."""
    kind = what.split()[0]
    if what == "Patient read":
        return p.ref
    if what.endswith("read") and p.ids.get(kind):
        return rng.choice(p.ids[kind])
    if what.endswith("by code"):
        return f"{kind}?subject={p.ref}&code={quote(rng.choice(observation_codes[:12]), safe='')}"
    return f"{kind}?subject={p.ref}&_count=20"


def requests(
    patients: list[Patient],
    ops: list[Operator],
    count: int,
    observation_codes: list[str],
    condition_codes: list[str],
    seed: int = SEED,
) -> list[Request]:
    """``count`` requests of a working day, in order (wrk cycles through them)."""
    rng = random.Random(f"emrguard-bench-mix:{seed}")
    zipf = Zipf(len(patients), ZIPF_S, rng)
    by: dict[tuple[str, str], list[Operator]] = collections.defaultdict(list)
    for o in ops:
        by[(o.role, o.dept)].append(o)
        by[(o.role, "")].append(o)
    out: list[Request] = []
    for _ in range(count):
        n = zipf.draw(rng)
        p = patients[n]
        who = _weighted(rng, WHO)
        bg = ""
        if who in ("own department", "other department", "break-glass", "physician teaching"):
            role = "physician" if who == "physician teaching" else _weighted(rng, CLINICAL_ROLES)
            others = [d for d in DEPARTMENTS if d != p.dept]
            o = rng.choice(
                by[(role, p.dept if who in ("own department", "physician teaching") else rng.choice(others))]
            )
            what = _weighted(rng, CLINICAL)
            path, purpose = _about(rng, p, what, observation_codes), o.purpose
            if who == "physician teaching":
                purpose = "TRAIN"
            if who == "break-glass":
                purpose, bg = "ETREAT", BREAK_GLASS_REASON
        elif who == "pharmacist":
            o = rng.choice(by[("pharmacist", "")])
            what = _weighted(rng, PHARMACIST)
            path, purpose = _about(rng, p, what, observation_codes), o.purpose
        elif who == "researcher":
            o = rng.choice(by[("researcher", "")])
            what = _weighted(rng, RESEARCHER)
            path = (
                p.ref
                if what == "Patient read by real id"
                else f"Condition?code={quote(rng.choice(condition_codes[:10]), safe='')}&_count=20"
            )
            purpose = o.purpose
        else:  # records officer, student
            o = rng.choice(by[("records_officer" if who == "records officer" else "student", "")])
            what = _weighted(rng, CLINICAL)
            path, purpose = _about(rng, p, what, observation_codes), o.purpose
        out.append(Request(path, o.sub, purpose, f"{who}: {what}", n, bg))
    return out


def write_request_file(path: Path, reqs: list[Request], tokens: dict[str, str]) -> None:
    """One request a line for bench/requests.lua: method, path, then headers, tab-separated."""
    lines = []
    for r in reqs:
        fields = ["GET", r.path, f"Authorization: Bearer {tokens[r.sub]}", f"X-Purpose-Of-Use: {r.purpose}"]
        if r.break_glass:
            fields.append(f"X-Break-Glass-Reason: {r.break_glass}")
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def describe(reqs: list[Request], patients: list[Patient], ops: list[Operator]) -> dict[str, Any]:
    """What the mix is, for bench.json: shares of each kind and purpose, patients and operators used."""
    kinds = collections.Counter(r.kind for r in reqs)
    purposes = collections.Counter(r.purpose for r in reqs)
    top = collections.Counter(r.patient for r in reqs).most_common(10)
    return {
        "requests_in_list": len(reqs),
        "operators": len(ops),
        "operators_used": len({r.sub for r in reqs}),
        "patients": len(patients),
        "patients_used": len({r.patient for r in reqs}),
        "top_10_patients_share": round(sum(c for _, c in top) / len(reqs), 3),
        "zipf_s": ZIPF_S,
        "purposes": {k: round(v / len(reqs), 3) for k, v in purposes.most_common()},
        "kinds": {k: round(v / len(reqs), 3) for k, v in kinds.most_common()},
    }
