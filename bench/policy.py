"""Policy decisions in isolation: what one cold request or response decision costs each engine.

    python -m bench.policy [--engine embedded|opa|both] [--repeat 7] [--json] [--policy-dir DIR]
                           [--baseline DIR] [--compiled]

No gateway, no network but the OPA server's loopback: the decision inputs the gateway builds
(gateway/context.py, gateway/fhir/resources.py: Slot.summary) for a physician treating patients of
her department, with realistic codings (LOINC, ICD-10 and ICD-10-CN, SNOMED CT, RxNorm, HL7
categories and statuses, confidentiality labels, a few sensitive codes), decided by

  embedded       the interpreter (regorus Engine), as gateway/policy/embedded.py asks it
  compiled       the request decision by regorus' compiled program (Program/Rvm), --compiled
  baseline       the embedded engine on another copy of the policies (--baseline), to compare with
  opa            a real OPA server (scripts/ensure-opa.sh) over loopback HTTP, one pooled session

Every decision is cold: no decision is cached between calls (the engine keeps none). Each case is
timed in rounds of many calls; a round's median is kept and the median (and min, max) over
--repeat rounds is printed, in µs, JSON in and out included: wall clock, and the CPU time of the
calling thread (for the OPA server that is the client's share only). The machine is shared: compare runs
made back to back, never a number against a threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import regorus

from devtools.procs import free_port, wait_http
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.engine import REQUEST_DECISION, RESPONSE_DECISION, PolicyEngine, PolicyError
from gateway.policy.files import policy_data, policy_modules
from gateway.policy.opa_server import OpaServerEngine

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "opa_policies"
NOW = "2026-12-01T08:00:00.000Z"

LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CN = "urn:oid:2.16.156.10011.2.3.3.11"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HL7 = "http://terminology.hl7.org/CodeSystem/"
CONF = HL7 + "v3-Confidentiality"

#: Laboratory and vital-sign codes (one sensitive: a genetic test).
LOINC_CODES = [
    "8867-4", "8480-6", "8462-4", "8310-5", "9279-1", "59408-5", "29463-7", "8302-2", "39156-5",
    "2339-0", "718-7", "4548-4", "2160-0", "2951-2", "2823-3", "2093-3", "2571-8", "6690-2", "777-3",
    "1742-6", "1920-8", "2085-9", "13457-7", "3016-3", "3024-7", "33914-3", "14682-9", "2075-0",
    "17861-6", "2028-9", "51969-4",
]  # fmt: skip
#: Diagnoses, with their SNOMED CT coding where a record carries both (a few sensitive: F32, F10.2, B20).
DIAGNOSES = [
    ("I10", "38341003"), ("E11.9", "44054006"), ("J45.909", "195967001"), ("I25.10", "53741008"),
    ("N18.3", "433144002"), ("K21.9", "235595009"), ("M54.5", "279039007"), ("E78.5", "55822004"),
    ("J44.9", "13645005"), ("I48.91", "49436004"), ("I50.9", "84114007"), ("E03.9", "40930008"),
    ("D64.9", "271737000"), ("R51", "25064002"), ("J18.9", "233604007"), ("N39.0", "68566005"),
    ("K29.70", "4556007"), ("G43.909", "37796009"), ("M17.9", "396275006"), ("E66.9", "414916001"),
    ("F32.9", "35489007"), ("F10.20", "66214007"), ("B20", "86406008"),
]  # fmt: skip
MEDICATIONS = ["197361", "310965", "314076", "860975", "617312", "1191", "198211", "259255", "308136"]
PROCEDURES = ["80146002", "73761001", "387713003", "71388002", "18286008", "40701008"]


def coding(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code}


def patient_context(dept: str, team: list[str], flags: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {"departments": [dept], "care_team": team, "flags": list(flags), "sealed": False, "seal": None}


#: The physician's patients: four of her department, one on her care team elsewhere, one VIP.
PATIENTS = {
    "Patient/p1": patient_context("cardiology", ["dr-li"]),
    "Patient/p2": patient_context("cardiology", []),
    "Patient/p3": patient_context("cardiology", ["dr-wang"]),
    "Patient/p4": patient_context("cardiology", []),
    "Patient/p5": patient_context("oncology", ["dr-li"]),
    "Patient/p6": patient_context("cardiology", [], ["VIP"]),
}


def base_input(action: dict[str, Any], target: dict[str, Any], patients: list[str]) -> dict[str, Any]:
    """As gateway/context.py builds it."""
    return {
        "subject": {"id": "dr-li", "name": "李医生", "roles": ["physician"], "dept": "cardiology",
                    "org": "h1", "grants": []},
        "purpose": "TREAT",
        "break_glass": None,
        "time": NOW,
        "request_id": "0" * 32,
        "action": {"method": "GET", "operation": None, "conditional": False, **action},
        "target": {"id": None, "compartment": None, "if_none_exist": {}, "ids": {}, "entries": [],
                   "params": {}, **target},
        "patients": {p: PATIENTS[p] for p in patients},
    }  # fmt: skip


def read_input() -> dict[str, Any]:
    """GET Patient/p1."""
    return base_input(
        {"interaction": "read", "level": "instance"},
        {"type": "Patient", "id": "p1", "patients": ["Patient/p1"], "ids": {"Patient/p1": False}},
        ["Patient/p1"],
    )


def search_input() -> dict[str, Any]:
    """GET Observation?patient=Patient/p1&code=http://loinc.org|8867-4,http://loinc.org|8480-6&_count=50."""
    return base_input(
        {"interaction": "search-type", "level": "type"},
        {"type": "Observation", "patients": ["Patient/p1"], "ids": {"Patient/p1": False},
         "params": {"patient": ["Patient/p1"], "code": [f"{LOINC}|8867-4,{LOINC}|8480-6"], "_count": ["50"]}},
        ["Patient/p1"],
    )  # fmt: skip


def entry(rtype: str, rid: str, patients: list[str], codes: list[dict[str, str]],
          security: list[dict[str, str]], tags: list[dict[str, str]], i: int) -> dict[str, Any]:  # fmt: skip
    """As Slot.summary() sends it."""
    return {
        "type": rtype, "id": rid, "patient": patients[0] if patients else None, "patients": patients,
        "security": security, "tags": tags, "codes": codes, "kind": "entry",
        "path": f"entry[{i}].resource", "search_mode": "match", "bundle_type": "searchset",
    }  # fmt: skip


def distinct_entries(n: int, seed: int = 262) -> list[dict[str, Any]]:
    """n entries of one search answer, no two alike in what the policy judges (type, codings,
    labels, tags, patients): the worst case for the per-content grading."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    while len(out) < n:
        i = len(out)
        patients = [rng.choice(["Patient/p1"] * 6 + ["Patient/p2", "Patient/p3", "Patient/p5", "Patient/p6"])]
        security = [coding(CONF, rng.choice("NNNNNNR"))] if rng.random() < 0.7 else []
        tags = [coding("http://example.org/fhir/tags", "imported")] if rng.random() < 0.1 else []
        kind = rng.random()
        if kind < 0.5:
            rtype = "Observation"
            category = rng.choice(["vital-signs", "laboratory"])
            codes = [coding(HL7 + "observation-category", category), coding(LOINC, rng.choice(LOINC_CODES))]
            if category == "laboratory":
                codes.append(coding(HL7 + "v3-ObservationInterpretation", rng.choice("NNHL")))
        elif kind < 0.75:
            rtype = "Condition"
            icd, sct = rng.choice(DIAGNOSES)
            codes = [
                coding(HL7 + "condition-clinical", rng.choice(["active", "active", "resolved"])),
                coding(HL7 + "condition-ver-status", "confirmed"),
                coding(HL7 + "condition-category", rng.choice(["encounter-diagnosis", "problem-list-item"])),
                coding(rng.choice([ICD10, ICD10_CN]), icd),
                coding(SNOMED, sct),
            ]
        elif kind < 0.87:
            rtype = "MedicationRequest"
            codes = [
                coding(HL7 + "medicationrequest-category", rng.choice(["outpatient", "inpatient"])),
                coding(RXNORM, rng.choice(MEDICATIONS)),
            ]
        elif kind < 0.95:
            rtype = "Encounter"
            codes = [coding(HL7 + "v3-ActCode", rng.choice(["AMB", "IMP", "EMER"])),
                     coding(SNOMED, rng.choice(["185349003", "270427003", "390906007"]))]  # fmt: skip
        else:
            rtype = "Procedure"
            codes = [coding(SNOMED, rng.choice(PROCEDURES))]
        e = entry(rtype, f"{rtype.lower()}-{i}", patients, codes, security, tags, i)
        key = json.dumps([e["type"], e["patients"], e["codes"], e["security"], e["tags"]])
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def response_input(n: int) -> dict[str, Any]:
    """The answer to GET Observation?patient=... (any type: `_type` search), n distinct entries."""
    doc = search_input()
    entries = distinct_entries(n)
    doc["patients"] = {p: PATIENTS[p] for e in entries for p in e["patients"]} | doc["patients"]
    doc["entries"] = entries
    return doc


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("request: read Patient/p1", REQUEST_DECISION, read_input()),
        ("request: search Observation by code", REQUEST_DECISION, search_input()),
        *[
            (f"response: {n} distinct entries", RESPONSE_DECISION, response_input(n))
            for n in (1, 20, 35, 100)
        ],
    ]


async def calls_for(engine: PolicyEngine, path: str, doc: dict[str, Any]) -> int:
    """Warm the engine on this case (first-call costs are not the decision's) and size a round to
    last ~0.2 s."""
    t0 = time.perf_counter()
    for _ in range(5):
        await engine.evaluate(path, doc)
    once = (time.perf_counter() - t0) / 5
    return max(10, min(400, int(0.2 / max(once, 1e-6))))


async def one_round(engine: PolicyEngine, path: str, doc: dict[str, Any], calls: int) -> tuple[float, float]:
    """The medians of one round of calls, in µs: wall-clock time, and the CPU time of this thread
    (what an in-process engine costs the gateway; on a shared machine it varies less)."""
    w, c = [], []
    for _ in range(calls):
        t, tc = time.perf_counter_ns(), time.thread_time_ns()
        await engine.evaluate(path, doc)
        c.append(time.thread_time_ns() - tc)
        w.append(time.perf_counter_ns() - t)
    return statistics.median(w) / 1000, statistics.median(c) / 1000


def summary(rounds: list[tuple[float, float]]) -> dict[str, float]:
    wall = [w for w, _ in rounds]
    return {"median_us": round(statistics.median(wall), 1), "min_us": round(min(wall), 1),
            "max_us": round(max(wall), 1), "cpu_median_us": round(statistics.median(c for _, c in rounds), 1)}  # fmt: skip


class CompiledRequest(PolicyEngine):
    """The request decision by regorus' compiled program (Program/Rvm), JSON in and out as the
    embedded engine: measured here only. The gateway does not use it: it binds an undefined value
    where Rego fails the expression, and refusals are lost (opa_policies/README.md, performance)."""

    name = "compiled"

    def __init__(self, policy_dir: Path) -> None:
        super().__init__(timeout=10)
        self.policy_dir = policy_dir
        self._vm: Any = None

    async def start(self) -> None:
        data = orjson.dumps(policy_data(self.policy_dir)).decode()
        modules = list(policy_modules(self.policy_dir).items())
        program = regorus.Program.compile_from_modules(data, modules, ["data.emr.request.decision"])
        self._vm = regorus.Rvm()
        self._vm.load_program(program)
        self._vm.set_data_json(data)

    async def ready(self) -> bool:
        return self._vm is not None

    async def _evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        if path != REQUEST_DECISION:
            raise PolicyError("compiled: the request decision only")
        self._vm.set_input_json(orjson.dumps(input_doc).decode())
        return orjson.loads(self._vm.execute())


def start_opa(policy_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    opa = subprocess.run(
        [str(ROOT / "scripts/ensure-opa.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [opa, "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error", str(policy_dir)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url


async def run(
    engines: list[str], repeat: int, policy_dir: Path, baseline: Path | None, compiled: bool
) -> dict[str, dict[str, Any]]:
    """Every case by every column, the columns' rounds interleaved (A, B, A, B ...) so that a change
    in the machine's load falls on all of them alike."""
    columns: dict[str, PolicyEngine] = {}
    procs = []
    for name in engines:
        if name == "opa":
            proc, url = start_opa(policy_dir)
            procs.append(proc)
            columns["opa"] = OpaServerEngine(url, timeout=10)
            continue
        columns["embedded"] = EmbeddedEngine(policy_dir, timeout=10)
        if baseline is not None:
            columns["baseline"] = EmbeddedEngine(baseline, timeout=10)
    results: dict[str, dict[str, Any]] = {}
    try:
        for engine in columns.values():
            await engine.start()
        if compiled:
            columns["compiled request"] = CompiledRequest(policy_dir)
            await columns["compiled request"].start()
        for label, path, doc in cases():
            here = {n: e for n, e in columns.items() if path == REQUEST_DECISION or n != "compiled request"}
            calls = {n: await calls_for(e, path, doc) for n, e in here.items()}
            rounds: dict[str, list[tuple[float, float]]] = {n: [] for n in here}
            for _ in range(repeat):
                for n, e in here.items():
                    rounds[n].append(await one_round(e, path, doc, calls[n]))
            results[label] = {n: summary(r) for n, r in rounds.items()}
    finally:
        for engine in columns.values():
            await engine.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=["embedded", "opa", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=7, help="rounds per case (the median is reported)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--policy-dir", type=Path, default=POLICY_DIR, help="another copy of opa_policies/")
    parser.add_argument("--baseline", type=Path, help="a copy of opa_policies/ to compare with (embedded)")
    parser.add_argument(
        "--compiled", action="store_true", help="also time the request decision's compiled program"
    )
    args = parser.parse_args()
    engines = ["embedded", "opa"] if args.engine == "both" else [args.engine]
    results = asyncio.run(run(engines, args.repeat, args.policy_dir, args.baseline, args.compiled))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    columns = list(dict.fromkeys(c for r in results.values() for c in r))
    print(f"median µs of {args.repeat} rounds: wall (min-max of the rounds) / CPU of this thread")
    print(f"{'decision':<40}" + "".join(f"{c:>26}" for c in columns))
    for label, row in results.items():
        cells = [
            f"{row[c]['median_us']:.0f} ({row[c]['min_us']:.0f}-{row[c]['max_us']:.0f}) / {row[c]['cpu_median_us']:.0f}"
            if c in row
            else "-"
            for c in columns
        ]
        print(f"{label:<40}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
