"""`make bench`: what the gateway costs, measured in one run on this machine.

Starts its own Medplum FHIR dev server (seeded), an OPA server, and the gateway in three modes,
then loads each with wrk over loopback:

  upstream      the FHIR server directly                               (a)
  bare          the gateway's upstream client alone (bench/passthrough.py) (b: the floor of this stack)
  embedded/opa  the full gateway with each policy engine               (c)

for a single read and a 100-entry search. Writes bench-results/bench.json and prints it, with the
ratios (c)/(b) and (c)/(a) computed within the run. No thresholds: numbers are for the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from devtools import tokens
from devtools.procs import free_port, wait_http
from devtools.synthetic import department_for, seed_server

ROOT = Path(__file__).resolve().parent.parent
ISSUER, AUDIENCE = "https://idp.bench.emrguard/", "emrguard"


def start_fhir(kind: str) -> tuple[subprocess.Popen[str], str]:
    """The upstream: the Medplum dev server, or HAPI FHIR JPA (devserver/hapi, ~30 s to start)."""
    if kind == "hapi":
        jar = subprocess.run(
            [str(ROOT / "scripts/ensure-hapi.sh")], capture_output=True, text=True, check=True
        ).stdout.strip()
        command = ["java", "-Xmx512m", "-XX:+UseSerialGC", "-jar", jar, "--server.port=0"]
    else:
        command = ["node", str(ROOT / "devserver/fhir-server.mjs"), "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready on" not in line:
        proc.kill()
        raise RuntimeError(f"{kind} did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[-1]


async def seed(base: str) -> tuple[str, str]:
    """20 synthetic patients plus 100 Observations for the first: (patient ref, one Observation id)."""
    ids = await seed_server(base, count=20, seed=262)
    patient = ids[0] if ids[0].startswith("Patient/") else f"Patient/{ids[0]}"
    entries = [
        {
            "request": {"method": "POST", "url": "Observation"},
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "subject": {"reference": patient},
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
                },
                "valueQuantity": {"value": 60 + i % 40, "unit": "/min"},
                "note": [{"text": f"bench observation {i}"}],
            },
        }
        for i in range(100)
    ]
    async with aiohttp.ClientSession() as s:
        async with s.post(base, json={"resourceType": "Bundle", "type": "batch", "entry": entries}) as r:
            r.raise_for_status()
            body = await r.json(content_type=None)
    obs_id = body["entry"][0]["response"]["location"].split("/")[1]
    return patient, obs_id


def start_gateway(
    mode: str, upstream: str, opa_url: str, key_file: Path, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "EMRGUARD_LISTEN": f"127.0.0.1:{port}",
            "EMRGUARD_UPSTREAM_URL": upstream,
            "EMRGUARD_JWT_PUBLIC_KEY_FILES": str(key_file),
            "EMRGUARD_ISSUER": ISSUER,
            "EMRGUARD_AUDIENCE": AUDIENCE,
            "EMRGUARD_POLICY_DIR": str(ROOT / "opa_policies"),
            "EMRGUARD_DB": str(work / f"{mode}.sqlite"),
            "EMRGUARD_AUDIT_LOG": str(work / f"{mode}.jsonl"),
            "EMRGUARD_PSEUDONYM_SECRET": "bench-only-pseudonym-secret-0123456789",
            "EMRGUARD_WATERMARK_SECRET": "bench-only-watermark-secret-0123456789",
        }
    )
    if mode == "bare":  # the floor: the same upstream client with no controls (bench/passthrough.py)
        command = [
            sys.executable,
            "-m",
            "bench.passthrough",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            upstream,
        ]
    else:
        env["EMRGUARD_POLICY_ENGINE"] = mode
        env["EMRGUARD_OPA_URL"] = opa_url
        command = [sys.executable, "-m", "gateway", "serve"]
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/healthz")
    return proc, base + "/fhir"


def wrk(url: str, token: str, seconds: int, connections: int) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(ROOT / "bench/report.lua"),
        "-H",
        f"Authorization: Bearer {token}",
        "-H",
        "X-Purpose-Of-Use: TREAT",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"BENCH_JSON (\{.*\})", out)
    assert match, out
    return json.loads(match.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--out", default="")
    ap.add_argument("--upstream", choices=("medplum", "hapi"), default="medplum")
    args = ap.parse_args(argv)
    if not shutil.which("wrk"):
        print("bench: wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2
    opa_bin = (
        os.environ.get("EMRGUARD_OPA_BIN")
        or subprocess.run(
            [str(ROOT / "scripts/ensure-opa.sh")], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    procs: list[subprocess.Popen[Any]] = []
    work = Path(tempfile.mkdtemp(prefix="emrguard-bench-"))
    try:
        fhir, upstream = start_fhir(args.upstream)
        procs.append(fhir)
        patient, obs_id = asyncio.run(seed(upstream))
        opa_port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    opa_bin,
                    "run",
                    "--server",
                    "--addr",
                    f"127.0.0.1:{opa_port}",
                    "--log-level",
                    "error",
                    str(ROOT / "opa_policies"),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        opa_url = f"http://127.0.0.1:{opa_port}"
        wait_http(opa_url + "/health")
        private, public = tokens.ensure_dev_keys(work / "keys")
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        token = tokens.mint(
            key,
            kid=public.stem,
            issuer=ISSUER,
            audience=AUDIENCE,
            sub="bench-nurse",
            roles=["nurse"],
            dept=department_for(0, 262),  # the department treating the benched patient (care relationship)
            ttl=3600,
        )
        targets = {"upstream": upstream}
        for mode in ("bare", "embedded", "opa"):
            proc, base = start_gateway(mode, upstream, opa_url, public, work)
            procs.append(proc)
            targets[mode] = base
        workloads = {
            "read": f"Observation/{obs_id}",
            "search100": f"Observation?subject={patient}&_count=100",
        }
        results: dict[str, Any] = {}
        for wname, path in workloads.items():
            results[wname] = {}
            for tname, base in targets.items():
                wrk(f"{base}/{path}", token, 2, args.connections)  # warm-up
                results[wname][tname] = wrk(f"{base}/{path}", token, args.seconds, args.connections)
                r = results[wname][tname]
                print(
                    f"{wname:10} {tname:9} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  non-2xx {r['non_2xx']}",
                    file=sys.stderr,
                )
            for engine in ("embedded", "opa"):
                c, b, a = results[wname][engine], results[wname]["bare"], results[wname]["upstream"]
                results[wname][f"ratio_{engine}_vs_bare"] = {
                    "rps": round(c["rps"] / b["rps"], 3),
                    "p50": round(c["p50_ms"] / b["p50_ms"], 3),
                }
                results[wname][f"ratio_{engine}_vs_upstream"] = {
                    "rps": round(c["rps"] / a["rps"], 3),
                    "p50": round(c["p50_ms"] / a["p50_ms"], 3),
                }
        doc = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "wrk": {"threads": 1, "connections": args.connections, "seconds": args.seconds},
            "operator": "nurse, purpose TREAT (full rules evaluated, audit on)",
            "upstream": args.upstream,
            "results": results,
        }
        out = Path(args.out or f"bench-results/bench-{args.upstream}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2))
        print(json.dumps(doc, indent=2))
        return 0
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
