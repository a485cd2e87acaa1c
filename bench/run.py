"""`make bench`: what the gateway costs, measured in one run on this machine (bench/README.md).

Starts its own FHIR server (Medplum dev server, or HAPI), seeds it (bench/mix.py: 1,000 synthetic
patients and one with 100 Observations), starts an OPA server and, side by side, every mode:

  upstream            the FHIR server directly
  bare                the gateway's upstream client alone (bench/passthrough.py): the floor
  embedded            the full gateway, embedded engine (regorus)
  opa                 the full gateway, OPA server (its CPU counted with the gateway's)
  embedded_2_workers  the full gateway, `emrguard serve --workers 2` (skipped while it has none)

then loads each with wrk (bench/requests.lua: a pre-generated request list) for three workloads:
`read` (one Observation), `search100` (a patient's 100 Observations), `mix` (bench/mix.py).
Each mode gets a warm-up, then a measured run; CPU is read from /proc around it. Writes
bench-results/bench.json ({workload: {mode: {...}}}), bench-results/bench-run.json (what was
run, on what) and prints a table. No thresholds: the numbers are for the notes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bench import mix
from devtools import tokens
from devtools.procs import free_port, wait_http
from gateway.audit.checkpoints import create_signing_key

ROOT = Path(__file__).resolve().parent.parent
ISSUER, AUDIENCE = "https://idp.bench.emrguard/", "emrguard"
MODES = ("upstream", "bare", "embedded", "opa", "embedded_2_workers")
WORKLOADS = ("read", "search100", "mix")
GATEWAY_MODES = ("embedded", "opa", "embedded_2_workers")
#: Every control of the notice with request hooks (write_guard, explain, balp, alerts always load).
PLUGINS = "purpose,break_glass,grants,care,seal,watermark"
TICK = os.sysconf("SC_CLK_TCK")


# --- processes ------------------------------------------------------------------------------


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


def signing_key(work: Path) -> Path:
    key = work / "keys" / "audit-signing.pem"
    if not key.exists():
        create_signing_key(work / "keys")
    return key


def serve_has_workers() -> bool:
    """Whether `emrguard serve` takes --workers (asked of the CLI itself, not guessed)."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    return "--workers" in out.stdout


def start_mode(
    mode: str, upstream: str, opa_url: str, key_file: Path, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """A gateway mode (or the bare floor) on a free port: (process, its root URL)."""
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
            "EMRGUARD_PLUGINS": PLUGINS,
            # Measured as deployed: the chain head signed every second (II.2).
            "EMRGUARD_AUDIT_SIGNING_KEY_FILE": str(signing_key(work)),
            "EMRGUARD_AUDIT_CHECKPOINT_FILE": str(work / f"{mode}-checkpoints.jsonl"),
        }
    )
    if mode == "bare":  # the floor: the same upstream client with no controls (bench/passthrough.py)
        command = [sys.executable, "-m", "bench.passthrough", "--listen", f"127.0.0.1:{port}"]
        command += ["--upstream", upstream]
    else:
        env["EMRGUARD_POLICY_ENGINE"] = "opa" if mode == "opa" else "embedded"
        env["EMRGUARD_OPA_URL"] = opa_url
        command = [sys.executable, "-m", "gateway", "serve"]
        if mode == "embedded_2_workers":
            command += ["--workers", "2"]
    with open(work / f"{mode}.stderr", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", timeout=60)
    except RuntimeError:
        tail = (work / f"{mode}.stderr").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{mode} did not start:\n{tail}") from None
    return proc, base


def start_opa(opa_bin: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [opa_bin, "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error"]
        + [str(ROOT / "opa_policies")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url


# --- CPU from /proc -------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime in clock ticks), every process visible now."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces
        table[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return table


def _tree_ticks(table: dict[int, tuple[int, int]], roots: list[int]) -> int:
    """CPU of the roots and every descendant alive; the dead ones are in their parents' c-times."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo += children.get(pid, [])
    return total


def _machine_busy_ticks() -> int:
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in cpu[:8])
    return user + nice + system + irq + softirq + steal


@dataclass
class CpuWatch:
    """CPU ticks of named process groups, and of the whole machine, between start() and stop()."""

    groups: dict[str, list[int]]
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)

    def _read(self) -> dict[str, int]:
        table = _proc_table()
        out = {name: _tree_ticks(table, pids) for name, pids in self.groups.items()}
        out["_bench"] = _tree_ticks(table, [os.getpid()])  # everything this run started, and itself
        self_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["_reaped"] = round((self_usage.ru_utime + self_usage.ru_stime) * TICK)  # wrk, once it ended
        out["_machine"] = _machine_busy_ticks()
        return out

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> None:
        self.after = self._read()

    def seconds(self, name: str) -> float:
        return (self.after[name] - self.before[name]) / TICK


# --- load -----------------------------------------------------------------------------------


def wrk(
    url: str, request_file: Path, base_path: str, seconds: int, connections: int, first: int = 0
) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "20s", "--latency"]
    cmd += ["-s", str(ROOT / "bench/requests.lua"), url, "--", str(request_file), base_path, str(first)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    match = re.search(r"BENCH_JSON (\{.*\})", out.stdout)
    if not match:
        raise RuntimeError(f"wrk gave no result ({out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
    result: dict[str, Any] = json.loads(match.group(1))
    return result


def metrics(root: str) -> str | None:
    """The gateway's /metrics (text), or None where it has none."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(root + "/metrics", timeout=5) as r:
            return r.read().decode("utf-8", "replace") if r.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def cache_counters(text: str | None) -> dict[str, dict[str, float]]:
    """The decision cache's counters on a /metrics page (Prometheus text):
    {decision kind: {"hits": n, "misses": n}} from the series named ``*cache*hits_total`` and
    ``*cache*misses_total`` ({} when there are none)."""
    out: dict[str, dict[str, float]] = {}
    for line in (text or "").splitlines():
        m = _SAMPLE.match(line)
        if not m or "cache" not in m.group(1):
            continue
        what = (
            "hits"
            if m.group(1).endswith("hits_total")
            else "misses"
            if m.group(1).endswith("misses_total")
            else ""
        )
        if not what:
            continue
        labels: dict[str, str] = dict(_LABEL.findall(m.group(2) or ""))
        kind = labels.get("decision", str(m.group(1)))
        try:
            out.setdefault(kind, {"hits": 0.0, "misses": 0.0})[what] += float(m.group(3))
        except ValueError:
            continue
    return out


def cache_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    return {
        kind: {k: v - before.get(kind, {}).get(k, 0.0) for k, v in counts.items()}
        for kind, counts in after.items()
    }


def hit_rate(delta: dict[str, dict[str, float]]) -> float | None:
    """Hits over lookups, as gateway/policy/cache.py counts them: a whole-response lookup follows
    the entries' misses, so its miss is not another miss (its hit saves the entries' lookups)."""
    if not delta:
        return None
    hits = sum(c["hits"] for c in delta.values())
    misses = sum(c["misses"] for kind, c in delta.items() if kind != "response_whole")
    return round(hits / (hits + misses), 4) if hits + misses > 0 else None


def measure(
    target: Target,
    workload: Workload,
    seconds: int,
    warmup: int,
    connections: int,
    groups: dict[str, list[int]],
) -> dict[str, Any]:
    url = target.root
    base_path = target.fhir_path
    warm = wrk(url, workload.file, base_path, warmup, connections)
    first = warm["requests"]  # the measured run goes on where the warm-up stopped
    m0 = cache_counters(metrics(target.root)) if target.gateway else {}
    watch = CpuWatch(groups)
    watch.start()
    started = time.monotonic()
    r = wrk(url, workload.file, base_path, seconds, connections, first)
    wall = time.monotonic() - started
    watch.stop()
    m1 = cache_counters(metrics(target.root)) if target.gateway else {}
    n = r["requests"]
    target.answered += first + n
    statuses = {int(k): v for k, v in r["statuses"].items()}
    cpu = sum(watch.seconds(g) for g in target.cpu_groups)
    ours = watch.seconds("_bench")  # the whole tree of this run; a reaped wrk is in its cutime
    out: dict[str, Any] = {
        "rps": round(n / r["duration_s"], 1),
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "cpu_us_per_request": round(cpu / n * 1e6, 1) if n else None,
        "cache_hit_rate": hit_rate(cache_delta(m0, m1)),
        "requests": n,
        "seconds": r["duration_s"],
        "p90_ms": r["p90_ms"],
        "max_ms": r["max_ms"],
        "cpu_of": " + ".join(target.cpu_groups),
        "statuses": {str(k): statuses[k] for k in sorted(statuses)},
        "non_2xx": sum(v for k, v in statuses.items() if not 200 <= k < 300),
        "5xx": sum(v for k, v in statuses.items() if k >= 500),
        "socket_errors": {k: v for k, v in r["socket_errors"].items() if v},
        "upstream_cpu_us_per_request": round(watch.seconds("upstream") / n * 1e6, 1) if n else None,
        "client_cpu_us_per_request": round(watch.seconds("_reaped") / n * 1e6, 1) if n else None,
        # Cores busy with what this run did not start (other people on the machine), on average.
        "other_load_cores": round(max(0.0, watch.seconds("_machine") - ours) / wall, 2),
        "warmup_requests": first,
    }
    if m1:
        out["cache_counters"] = cache_delta(m0, m1)
    return out


# --- the run --------------------------------------------------------------------------------


@dataclass
class Target:
    mode: str
    root: str  # scheme://host:port
    fhir_path: str  # the FHIR base's path, e.g. /fhir
    cpu_groups: list[str]
    gateway: bool
    pid: int = 0  # the mode's own process (the gateway's main process, the floor's)
    answered: int = 0  # responses this run counted (warm-ups, measurements, probes)


@dataclass
class Workload:
    name: str
    file: Path
    what: str


async def probe(
    root: str, fhir_path: str, reqs: list[mix.Request], tokens_: dict[str, str]
) -> dict[str, dict[str, int]]:
    """Statuses of up to 4 requests of every kind of the mix, sent one at a time: what each kind gets."""
    picked: dict[str, list[mix.Request]] = {}
    for r in reqs:
        if len(picked.setdefault(r.kind, [])) < 4:
            picked[r.kind].append(r)
    out: dict[str, dict[str, int]] = {}
    async with aiohttp.ClientSession() as s:
        for kind in sorted(picked):
            for r in picked[kind]:
                headers = {"Authorization": f"Bearer {tokens_[r.sub]}", "X-Purpose-Of-Use": r.purpose}
                if r.break_glass:
                    headers["X-Break-Glass-Reason"] = r.break_glass
                async with s.get(f"{root}{fhir_path}/{r.path}", headers=headers) as resp:
                    await resp.read()
                    counts = out.setdefault(kind, {})
                    counts[str(resp.status)] = counts.get(str(resp.status), 0) + 1
    return out


def audit_check(mode: str, work: Path) -> dict[str, Any]:
    """What the mode's store holds after the run, and whether `emrguard audit verify` passes."""
    db = work / f"{mode}.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        records = c.execute("SELECT count(*) FROM audit").fetchone()[0]
        alerts = c.execute("SELECT count(*) FROM alerts").fetchone()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMRGUARD_")}
    started = time.monotonic()
    verify = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--db", str(db)]
        + ["--checkpoints", str(work / f"{mode}-checkpoints.jsonl"), "--public-key", str(signing_key(work))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    return {
        "records": records,
        "alerts": alerts,
        "verify_ok": verify.returncode == 0,
        "verify_s": round(time.monotonic() - started, 1),
        **({} if verify.returncode == 0 else {"verify_error": (verify.stderr or verify.stdout)[-500:]}),
    }


def write_single(path: Path, request_path: str, token: str) -> Path:
    path.write_text(f"GET\t{request_path}\tAuthorization: Bearer {token}\tX-Purpose-Of-Use: TREAT\n")
    return path


def ratios(results: dict[str, dict[str, Any]]) -> None:
    bare = results.get("bare")
    if not bare or "rps" not in bare:
        return
    for mode, r in results.items():
        if mode == "bare" or "rps" not in r:
            continue
        r["ratio_to_bare"] = {
            k: round(r[k] / bare[k], 3) if r.get(k) and bare.get(k) else None
            for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")
        }


def _f(value: Any, spec: str, width: int) -> str:
    return (format(value, spec) if isinstance(value, int | float) else "-").rjust(width)


COLUMNS = (
    # heading, width, how
    ("req/s", 8, lambda r: _f(r["rps"], ".1f", 8)),
    ("p50 ms", 8, lambda r: _f(r["p50_ms"], ".2f", 8)),
    ("p99 ms", 8, lambda r: _f(r["p99_ms"], ".2f", 8)),
    ("CPU µs/req", 10, lambda r: _f(r["cpu_us_per_request"], ".0f", 10)),
    ("CPU×bare", 8, lambda r: _f((r.get("ratio_to_bare") or {}).get("cpu_us_per_request"), ".2f", 8)),
    ("rps×bare", 8, lambda r: _f((r.get("ratio_to_bare") or {}).get("rps"), ".3f", 8)),
    ("hit rate", 8, lambda r: _f(r["cache_hit_rate"], ".3f", 8)),
    ("non-2xx", 7, lambda r: _f(r["non_2xx"], "d", 7)),
    ("5xx", 5, lambda r: _f(r["5xx"], "d", 5)),
    ("others", 6, lambda r: _f(r["other_load_cores"], ".2f", 6)),
)


def row(workload: str, mode: str, r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"{workload:9} {mode:18} skipped: {r['skipped']}"
    return f"{workload:9} {mode:18} " + " ".join(how(r) for _, _, how in COLUMNS)


def table(doc: dict[str, dict[str, Any]]) -> str:
    head = f"{'workload':9} {'mode':18} " + " ".join(h.rjust(w) for h, w, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    lines += [row(w, m, r) for w, modes in doc.items() for m, r in modes.items()]
    lines.append(
        "CPU: of the mode's own processes (upstream: the FHIR server; opa: the gateway and the OPA server) per "
        "completed request. others: cores busy, on average, with processes this run did not start."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="measured seconds per workload and mode")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up seconds before each measurement")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--mix-requests", type=int, default=12000, help="length of the mix's request list")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--out", default="bench-results/bench.json")
    ap.add_argument("--upstream", choices=("medplum", "hapi"), default="medplum")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    workload_names = [w for w in args.workloads.split(",") if w]
    if unknown := (set(modes) - set(MODES)) | (set(workload_names) - set(WORKLOADS)):
        ap.error(f"unknown mode or workload: {sorted(unknown)}")
    if not shutil.which("wrk"):
        print("bench: wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2
    opa_bin = (
        os.environ.get("EMRGUARD_OPA_BIN")
        or subprocess.run(
            [str(ROOT / "scripts/ensure-opa.sh")], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    began = time.monotonic()
    phases: dict[str, float] = {}
    procs: list[subprocess.Popen[Any]] = []
    work = Path(tempfile.mkdtemp(prefix="emrguard-bench-"))

    def note(msg: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        fhir, upstream = start_fhir(args.upstream)
        procs.append(fhir)
        note(f"{args.upstream} up")
        t = time.monotonic()
        templates = mix.templates()
        bundles = mix.patient_bundles(args.patients, templates)
        search = mix.search_bundle(args.patients, templates)
        phases["generate_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        patients = asyncio.run(mix.seed(upstream, bundles))
        (searched,) = asyncio.run(mix.seed(upstream, [search], first_index=args.patients))
        phases["seed_s"] = round(time.monotonic() - t, 1)
        resources = sum(len(b["entry"]) for b in bundles) + len(search["entry"])
        note(f"seeded {len(patients) + 1} patients, {resources} resources in {phases['seed_s']} s")

        opa, opa_url = start_opa(opa_bin)
        procs.append(opa)
        private, public = tokens.ensure_dev_keys(work / "keys")
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        ops = mix.operators()
        toks = mix.tokens_for(ops, key, public.stem, ISSUER, AUDIENCE)
        # read and search100: a nurse of the department treating the patient (full rules, TREAT)
        nurse = f"nurse-{searched.dept}-1"
        reqs = mix.requests(
            patients,
            ops,
            args.mix_requests,
            mix.codes(bundles, "Observation"),
            mix.codes(bundles, "Condition"),
        )
        mix.write_request_file(work / "mix.txt", reqs, toks)
        workloads = {
            "read": Workload(
                "read",
                write_single(work / "read.txt", searched.ids["Observation"][0], toks[nurse]),
                f"GET {searched.ids['Observation'][0]} (nurse of {searched.dept}, TREAT)",
            ),
            "search100": Workload(
                "search100",
                write_single(
                    work / "search100.txt", f"Observation?subject={searched.ref}&_count=100", toks[nurse]
                ),
                f"GET Observation?subject=<patient>&_count=100 ({len(searched.ids['Observation'])} Observations, "
                f"{len(mix.codes([search], 'Observation'))} codes; nurse of {searched.dept}, TREAT)",
            ),
            "mix": Workload("mix", work / "mix.txt", "bench/mix.py"),
        }

        has_workers = serve_has_workers()
        parts = urlsplit(upstream)
        targets: dict[str, Target | str] = {}
        for mode in modes:
            if mode == "upstream":
                targets[mode] = Target(
                    mode, f"{parts.scheme}://{parts.netloc}", parts.path, ["upstream"], False
                )
                continue
            if mode == "embedded_2_workers" and not has_workers:
                targets[mode] = "emrguard serve has no --workers yet"
                continue
            proc, root = start_mode(mode, upstream, opa_url, public, work)
            procs.append(proc)
            cpu = ["bare"] if mode == "bare" else ["gateway", "opa"] if mode == "opa" else ["gateway"]
            targets[mode] = Target(mode, root, "/fhir", cpu, mode != "bare", proc.pid)
        note("modes up: " + ", ".join(m for m, t in targets.items() if isinstance(t, Target)))

        probes: dict[str, Any] = {}
        for mode, target in targets.items():
            if isinstance(target, Target) and target.gateway:
                probes[mode] = asyncio.run(probe(target.root, target.fhir_path, reqs, toks))
                target.answered += sum(sum(c.values()) for c in probes[mode].values())
        if len({json.dumps(p, sort_keys=True) for p in probes.values()}) > 1:
            note("the gateway modes answer the mix's probe requests differently: see bench-run.json")

        results: dict[str, dict[str, Any]] = {}
        for wname in workload_names:
            results[wname] = {}
            for mode, target in targets.items():
                if isinstance(target, str):
                    results[wname][mode] = {"skipped": target}
                    continue
                groups = {"upstream": [fhir.pid], "opa": [opa.pid]}
                if target.pid:
                    groups["gateway" if target.gateway else "bare"] = [target.pid]
                r = measure(target, workloads[wname], args.seconds, args.warmup, args.connections, groups)
                results[wname][mode] = r
                note(row(wname, mode, r))
                if r["5xx"] or r["socket_errors"]:
                    note(
                        f"  ! {mode} {wname}: 5xx {r['5xx']}, socket errors {r['socket_errors']}, statuses {r['statuses']}"
                    )
            ratios(results[wname])

        audits = {}
        for mode, target in targets.items():
            if isinstance(target, Target) and target.gateway:
                proc = next(p for p in procs if p.pid == target.pid)
                proc.send_signal(signal.SIGTERM)  # the last records committed, the last checkpoint signed
                proc.wait(30)
                audits[mode] = {"responses_counted": target.answered, **audit_check(mode, work)}
                note(f"audit trail of {mode}: {audits[mode]}")

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        run = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "took_s": round(time.monotonic() - began, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
            },
            "upstream": args.upstream,
            "wrk": {
                "threads": 1,
                "connections": args.connections,
                "seconds": args.seconds,
                "warmup_s": args.warmup,
            },
            "gateway": {"plugins": PLUGINS, "audit_checkpoints": "signed every second", "watermark": True},
            "population": {
                "patients": len(patients),
                "resources": resources,
                "templates": mix.TEMPLATES,
                "observations_per_patient": mix.OBSERVATIONS_KEPT,
                **phases,
            },
            "workloads": {w.name: w.what for w in workloads.values()},
            "mix": mix.describe(reqs, patients, ops),
            "mix_probe_statuses": probes,
            "audit_trails": audits,
        }
        out.with_name("bench-run.json").write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n")
        print(table(results))
        note(f"wrote {out} and {out.with_name('bench-run.json')}")
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
