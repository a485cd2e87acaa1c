"""The decision cache (gateway/policy/cache.py): an answer is reused only where the policy would give
it again, exactly — the whole input and the policy revision in the key, ``valid_until`` honoured to
the second, alerts raised for every request a cached answer serves.

Decisions are made by the real embedded engine over opa_policies/ (the inputs are the parity
table's, tests/gateway/policy/test_parity.py); the gateway around it is reduced to what
gateway/decide.py reads (engine, settings, hooks), said where it is.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.app import create_app, metrics
from gateway.config import ConfigError, Settings, load_settings
from gateway.context import RequestContext
from gateway.decide import decision_cache, judge, request_decision
from gateway.fhir.resources import Slot, collect
from gateway.policy import policy_data, policy_modules
from gateway.policy.cache import DecisionCache, contract_violations, input_fields, utc_ns
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.engine import REQUEST_DECISION, RESPONSE_DECISION
from gateway.runtime import GATEWAY
from gateway.store.commit import utc_now
from tests.conftest import POLICY_DIR
from tests.gateway.policy.test_parity import (
    ENTRIES,
    GRANTS,
    VARIANT_ENTRIES,
    base,
    normalise,
    request_inputs,
    response_inputs,
)

T0 = "2026-12-01T08:00:00.000Z"


# --- a gateway reduced to what gateway/decide.py reads ---------------------------------------------


class NoHooks:
    """The plugins' hooks: the facts are in the inputs the tests give."""

    async def before_response_decision(self, ctx: RequestContext, patients: set[str]) -> None:
        return None


@dataclass
class Gw:
    engine: EmbeddedEngine
    settings: Settings
    hooks: NoHooks = field(default_factory=NoHooks)
    upstream: Any = None


@pytest.fixture(scope="module")
def loaded() -> EmbeddedEngine:
    engine = EmbeddedEngine(POLICY_DIR, timeout=5)
    engine.load()
    return engine


@pytest.fixture
def gw(loaded: EmbeddedEngine) -> Gw:
    loaded.cache = None  # a fresh cache per test
    return Gw(loaded, Settings(decision_cache_size=1000))


def ctx(request_id: str = "r-1") -> RequestContext:
    return RequestContext(request_id, "GET", "/fhir/x", "", None, None, {})


def at(doc: dict[str, Any], time: str, request_id: str = "r-1") -> dict[str, Any]:
    return dict(copy.deepcopy(doc), time=time, request_id=request_id)


def later(t: str, seconds: float) -> str:
    when = datetime.fromisoformat(t) + timedelta(seconds=seconds)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def obs(rid: str, patient: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": patient},
        **extra,
    }


def searchset(*resources: dict[str, Any]) -> list[Slot]:
    return collect(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
        }
    )


def read_input(roles: list[str], purpose: str, patient: str = "Patient/p1", **extra: Any) -> dict[str, Any]:
    doc = base(
        roles,
        purpose,
        target={"type": "Observation", "id": "o1", "patients": [patient], "params": {}, "entries": []},
    )
    doc["patients"] = copy.deepcopy(doc["patients"])
    doc.update(extra)
    return doc


def student(grants: list[dict[str, Any]]) -> dict[str, Any]:
    doc = read_input(["student"], "TRAIN")
    doc["subject"]["grants"] = grants
    return doc


def rotation(start: str, end: str) -> dict[str, Any]:
    return dict(GRANTS["rotation"], operator="u1", start=start, end=end)


# --- the contract the cache relies on ----------------------------------------------------------------


def test_the_policies_keep_the_cache_contract() -> None:
    """Load-time check (DecisionCache.admits runs it on the engine's revision): no rule reads the
    clock, the network or request_id; every package reading input.time has a valid_until that both
    decisions carry. Today that is emr.grants alone."""
    modules = policy_modules(POLICY_DIR)
    assert contract_violations(modules, policy_data(POLICY_DIR)) == []
    readers = {name for name, text in modules.items() if "time" in input_fields(text)[0]}
    assert readers == {"emr/grants/grants.rego"}


def test_the_contract_check_finds_what_breaks_it() -> None:
    modules = policy_modules(POLICY_DIR)
    data = policy_data(POLICY_DIR)
    sneaky = {
        "emr/x/x.rego": 'package emr.x\nimport rego.v1\n# input.time in a comment is no read\nlate if object.get(input, "time", "") > "2027"\n',
    }
    problems = contract_violations({**modules, **sneaky}, data)
    assert problems == ["package emr.x: reads input.time but has no valid_until rule"] + [
        f"package emr.x: reads input.time, but the decision of emr.{d} does not carry data.emr.x.valid_until"
        for d in ("request", "response")
    ]
    assert "time" in input_fields('late if input["time"] > ""\n')[0]
    for text, expected in (
        ("package emr.x\nnow := time.now_ns()\n", "calls time.now_ns"),
        ("package emr.x\nr := http.send({})\n", "calls http.send"),
        ("package emr.x\nwho := input.request_id\n", "reads input.request_id"),
        ("package emr.x\nall := input\n", "reads input whole"),
        ("package emr.x\nf(k) := input[k]\n", "reads input whole"),
    ):
        found = contract_violations({**modules, "emr/x/x.rego": text}, data)
        assert any(expected in p for p in found), (text, found)
    assert input_fields('m := "the input.time" # input.time\n') == (set(), [])  # text, a comment
    outside = contract_violations(modules, {**data, "extra": {}})
    assert outside == ["data.extra: policy data outside data.emr.config is not in the revision"]
    no_field = {k: v.replace('"valid_until": data.emr.grants.valid_until,', "") for k, v in modules.items()}
    assert "package emr.request: its decision has no valid_until" in contract_violations(no_field, data)


def test_times_are_read_exactly_or_not_at_all() -> None:
    assert utc_ns("1970-01-01T00:00:01Z") == 1_000_000_000
    assert utc_ns("2026-12-01T08:00:00.000Z") == utc_ns("2026-12-01T08:00:00Z")
    assert utc_ns("2026-12-01T08:00:00.123456789Z") == utc_ns("2026-12-01T08:00:00Z") + 123_456_789  # type: ignore[operator]
    for odd in (
        "2026-12-01T08:00:00+00:00",
        "2026-02-30T00:00:00Z",
        "2026-12-01T08:00:60Z",
        "x",
        None,
        7,
        "",
    ):
        assert utc_ns(odd) is None  # never cached: the policy alone decides on it


def test_the_cache_size_is_a_setting() -> None:
    env = {
        "EMRGUARD_UPSTREAM_URL": "http://fhir.test/R4",
        "EMRGUARD_JWKS_URL": "http://idp.test/jwks",
        "EMRGUARD_ISSUER": "i",
        "EMRGUARD_AUDIENCE": "a",
        "EMRGUARD_PSEUDONYM_SECRET": "p" * 32,
        "EMRGUARD_WATERMARK_SECRET": "w" * 32,
        "EMRGUARD_AUDIT_CHECKPOINTS": "false",
    }
    assert load_settings(environ=env).decision_cache_size == 20000
    assert load_settings(environ={**env, "EMRGUARD_DECISION_CACHE_SIZE": "0"}).decision_cache_size == 0
    for bad in ("-1", "1000001", "many"):
        with pytest.raises(ConfigError, match="decision_cache_size"):
            load_settings(environ={**env, "EMRGUARD_DECISION_CACHE_SIZE": bad})


# --- request decisions -------------------------------------------------------------------------------


async def fresh(engine: EmbeddedEngine, doc: dict[str, Any]) -> Any:
    """The decision of the engine itself, no cache."""
    return engine.request_decision(await engine.evaluate(REQUEST_DECISION, doc))


async def test_repeated_inputs_hit_whatever_the_request_id_and_a_later_time(gw: Gw) -> None:
    doc = read_input(["physician"], "TREAT")
    first = await request_decision(gw, ctx(), at(doc, T0, "r-1"))
    again = await request_decision(gw, ctx(), at(doc, later(T0, 3600), "r-2"))
    cache = decision_cache(gw)
    assert (cache.misses["request"], cache.hits["request"]) == (1, 1) and cache.hit_rate() == 0.5
    assert cache.answered["request"] == {"cache": 1, "engine": 1}
    assert first == again and first.allow and first.valid_until is None


async def test_any_fact_changed_is_a_miss_and_decides_afresh(gw: Gw) -> None:
    """Everything a decision reads is in the key: a seal, a revoked grant, another purpose or role,
    another care team take effect on the very next request."""
    doc = read_input(["physician"], "TREAT")
    sealed = copy.deepcopy(doc)
    sealed["patients"]["Patient/p1"].update(sealed=True, seal={"id": "s9", "authorised": [], "case": "c"})
    other_team = copy.deepcopy(doc)
    other_team["patients"]["Patient/p1"].update(departments=["oncology"], care_team=[])
    with_rotation = student([rotation("2026-11-01T00:00:00Z", "2027-01-01T00:00:00Z")])
    revoked = student([])
    variants = {
        "seal added": sealed,
        "care team": other_team,
        "purpose": read_input(["physician"], "HRESCH"),
        "role": read_input(["nurse"], "TREAT", patient="Patient/vip"),
        "grant": with_rotation,
        "grant revoked": revoked,
        "break-glass": read_input(
            ["physician"], "ETREAT", patient="Patient/p2", break_glass={"reason": "arrest"}
        ),
    }
    cache = decision_cache(gw)
    for name, changed in [("base", doc), *variants.items()]:
        before = cache.misses["request"]
        decision = await request_decision(gw, ctx(), at(changed, T0))
        assert cache.misses["request"] == before + 1, name
        assert decision == await fresh(gw.engine, at(changed, T0)), name
    assert not (await request_decision(gw, ctx(), at(sealed, T0))).allow  # the seal refuses at once
    assert not (await request_decision(gw, ctx(), at(revoked, T0))).allow  # so does the revocation
    assert (await request_decision(gw, ctx(), at(with_rotation, T0))).allow


async def test_valid_until_is_honoured_to_the_second(gw: Gw) -> None:
    """A rotation ending at E: allowed (and reused) until E, refused from E on; the refusal quotes
    the time, so it is never reused. A rotation starting later bounds the answer too."""
    end = "2026-12-01T08:00:10Z"
    doc = student([rotation("2026-11-01T00:00:00Z", end)])
    cache = decision_cache(gw)
    d = await request_decision(gw, ctx(), at(doc, "2026-12-01T08:00:08.500Z"))
    assert d.allow and d.valid_until == end
    for t in ("2026-12-01T08:00:08.500Z", "2026-12-01T08:00:09.000Z", "2026-12-01T08:00:09.999Z"):
        assert (await request_decision(gw, ctx(), at(doc, t))).allow
    assert cache.hits["request"] == 3
    for t in ("2026-12-01T08:00:10.000Z", "2026-12-01T08:00:10.001Z", "2026-12-01T08:00:11.000Z"):
        refused = await request_decision(gw, ctx(), at(doc, t))
        assert not refused.allow and refused.reasons[0].rule == "grant.no-rotation"
        assert refused.reasons[0].detail == {"time": t}  # never a cached refusal's time
    assert cache.hits["request"] == 3 and cache.expired["request"] == 1
    # Asked at an earlier time than it was decided (a clock stepped back): not reused.
    assert (await request_decision(gw, ctx(), at(doc, "2026-12-01T08:00:09.000Z"))).allow
    assert (await request_decision(gw, ctx(), at(doc, "2026-12-01T08:00:08.000Z"))).allow
    assert cache.hits["request"] == 3
    # A second rotation starting at S (fractional): the answer holds until S, rounded down.
    doc2 = student(
        [rotation("2026-11-01T00:00:00Z", "2027-01-01T00:00:00Z"), rotation("2026-12-01T08:30:00.750Z", end)]
    )
    d2 = await request_decision(gw, ctx(), at(doc2, T0))
    assert d2.valid_until == "2026-12-01T08:30:00Z"


async def test_a_grant_ending_in_two_seconds_is_honoured_until_then_and_refused_after(gw: Gw) -> None:
    """The real clock, the cache on: the gateway's own timestamps (utc_now) on every request."""
    end = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0) + timedelta(seconds=1)
    end_text = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = student([rotation("2026-01-01T00:00:00Z", end_text)])
    seen: list[tuple[str, bool]] = []
    while datetime.now(UTC) < end + timedelta(milliseconds=300):
        now = utc_now()
        seen.append((now, (await request_decision(gw, ctx(), at(doc, now))).allow))
        await asyncio.sleep(0.05)
    assert all(allowed == (utc_ns(t) < utc_ns(end_text)) for t, allowed in seen), seen  # type: ignore[operator]
    assert any(a for _, a in seen) and not seen[-1][1]
    assert decision_cache(gw).hits["request"] > 10  # the allowed ones came from the cache


async def test_a_cached_break_glass_decision_still_alerts_every_request(gw: Gw) -> None:
    doc = read_input(["physician"], "ETREAT", patient="Patient/p2", break_glass={"reason": "arrest"})
    contexts = [ctx(f"r-{i}") for i in range(3)]
    for c in contexts:
        decision = await request_decision(gw, c, at(doc, T0, c.request_id))
        assert decision.allow
    assert decision_cache(gw).hits["request"] == 2
    for c in contexts:
        assert [(a["event"], a["patients"], a["request_id"]) for a in c.alerts] == [
            ("break-glass", ["Patient/p2"], c.request_id)
        ]
    # The objects handed out are fresh: a caller changing one changes no later answer.
    contexts[0].alerts[0]["patients"].append("Patient/x")
    (await request_decision(gw, ctx(), at(doc, T0))).obligations[0]["patients"].append("Patient/y")
    assert (await request_decision(gw, ctx(), at(doc, T0))).obligations[0]["patients"] == ["Patient/p2"]


async def test_lru_bound(loaded: EmbeddedEngine) -> None:
    loaded.cache = None
    small = Gw(loaded, Settings(decision_cache_size=3))
    docs = [read_input(["physician"], p) for p in ("TREAT", "HRESCH", "HOPERAT", "TRAIN")]
    for d in docs[:3]:
        await request_decision(small, ctx(), at(d, T0))
    await request_decision(small, ctx(), at(docs[0], T0))  # most recently used now
    await request_decision(small, ctx(), at(docs[3], T0))  # evicts docs[1], the least recent
    cache = decision_cache(small)
    assert len(cache) == 3 and cache.evictions == 1
    hits = cache.hits["request"]
    await request_decision(small, ctx(), at(docs[0], T0))
    await request_decision(small, ctx(), at(docs[2], T0))
    assert cache.hits["request"] == hits + 2
    await request_decision(small, ctx(), at(docs[1], T0))
    assert cache.hits["request"] == hits + 2 and cache.evictions == 2


async def test_size_zero_turns_the_cache_off(loaded: EmbeddedEngine) -> None:
    loaded.cache = None
    off = Gw(loaded, Settings(decision_cache_size=0))
    doc = read_input(["physician"], "TREAT")
    decisions = [await request_decision(off, ctx(), at(doc, T0)) for _ in range(3)]
    slots = searchset(obs("o1", "Patient/p1"), obs("o2", "Patient/p1"))
    verdicts = [await judge(off, ctx(), at(doc, T0), slots) for _ in range(2)]
    cache = decision_cache(off)
    assert not cache.enabled and len(cache) == 0
    assert sum(cache.hits.values()) == sum(cache.misses.values()) == 0
    assert decisions[0] == decisions[2] and verdicts[0] == verdicts[1]


async def test_only_a_pinned_revision_is_cached(gw: Gw) -> None:
    """An OPA server's policies can change behind the gateway's back: its answers are not cached."""

    class Unpinned(EmbeddedEngine):
        name = "opa"

    engine = Unpinned(POLICY_DIR, timeout=5)
    engine.load()
    other = Gw(engine, Settings(decision_cache_size=100))
    doc = read_input(["physician"], "TREAT")
    for _ in range(2):
        await request_decision(other, ctx(), at(doc, T0))
    assert sum(decision_cache(other).misses.values()) == 0 and len(decision_cache(other)) == 0


# --- response decisions, per distinct entry ------------------------------------------------------------


async def test_a_search_then_a_read_hit_per_distinct_entry(gw: Gw) -> None:
    doc = read_input(["physician"], "TREAT", patient="Patient/p1")
    search = searchset(
        *(obs(f"o{i}", "Patient/p1") for i in range(5)),
        obs(
            "hiv",
            "Patient/p1",
            code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "B20"}]},
        ),
        obs("p2", "Patient/p2"),
    )
    first = await judge(gw, ctx(), at(doc, T0), search)
    cache = decision_cache(gw)
    assert cache.misses["response_entry"] == 3 and cache.hits["response_entry"] == 0  # 3 distinct
    # The next page of the search: other records, the same content: every verdict held.
    again = await judge(gw, ctx(), at(doc, later(T0, 60), "r-2"), searchset(obs("o9", "Patient/p1")))
    assert cache.hits["response_entry"] == 1 and again == [first[0]]
    # A read is another kind of entry (kind, search mode are in the entry, so in the key), and
    # then hits as the search did.
    read = [Slot(obs("o9", "Patient/p1"), "root", "")]
    assert await judge(gw, ctx(), at(doc, T0), read) == await judge(gw, ctx(), at(doc, T0), read)
    assert cache.hits["response_entry"] == 2 and cache.misses["response_entry"] == 4
    # A page with one new entry: the held verdicts reused, only the new one decided.
    page = searchset(obs("o1", "Patient/p1"), obs("p2b", "Patient/p2"), obs("vip", "Patient/vip"))
    verdicts = await judge(gw, ctx(), at(doc, T0), page)
    assert cache.hits["response_entry"] == 4 and cache.misses["response_entry"] == 5
    alone = await gw.engine.decide_response(dict(at(doc, T0), entries=[s.summary() for s in page]))
    assert verdicts == alone.verdicts
    # A fact of the shared input changed (the patient sealed): every verdict decided again.
    sealed = copy.deepcopy(doc)
    sealed["patients"]["Patient/p1"].update(sealed=True, seal={"id": "s9", "authorised": [], "case": "c"})
    withheld = await judge(gw, ctx(), at(sealed, T0), read)
    assert withheld[0]["keep"] is False and cache.hits["response_entry"] == 4


async def test_response_alerts_of_cached_answers_are_raised_every_time(gw: Gw) -> None:
    """A break-the-glass read and a seal-authorised search: the whole answer is reused (which entry
    raised the alert is not said), and its alerts go with every request."""
    bg = read_input(["physician"], "ETREAT", patient="Patient/p2", break_glass={"reason": "arrest"})
    read = [Slot(obs("o1", "Patient/p2"), "root", "")]
    authorised = read_input(["physician"], "TREAT", patient="Patient/sealed")
    authorised["subject"]["id"] = "u-auth"
    search = searchset(
        obs("a", "Patient/sealed"), obs("b", "Patient/p1"), obs("c", "Patient/sealed", status="amended")
    )
    cache = decision_cache(gw)
    for doc, slots, event in ((bg, read, "break-glass"), (authorised, search, "seal-access")):
        for i in range(3):
            c = ctx(f"r-{i}")
            verdicts = await judge(gw, c, at(doc, T0, c.request_id), slots)
            assert all(v["keep"] for v in verdicts)
            assert [a["event"] for a in c.alerts] == [event]
            assert c.alerts[0]["patients"] == ["Patient/p2" if event == "break-glass" else "Patient/sealed"]
    assert cache.hits["response_whole"] == 4
    # The entry that raised no alert of its own in the search was not kept alone.
    plain = read_input(["physician"], "TREAT", patient="Patient/p1")
    plain["subject"]["id"] = "u-auth"
    plain["patients"] = authorised["patients"]
    before = cache.hits["response_entry"]
    await judge(gw, ctx(), at(plain, T0), [Slot(obs("b", "Patient/p1"), "root", "")])
    assert cache.hits["response_entry"] == before


async def test_entries_are_judged_alike_alone_and_together(loaded: EmbeddedEngine) -> None:
    """What the per-entry cache relies on, over the parity table's responses: an entry's verdict
    does not depend on the other entries, and a response that raises no alert has no entry that
    raises one alone."""
    checked = 0
    for n, doc in enumerate(response_inputs()):
        alerting = doc.get("break_glass") or doc["subject"]["id"] != "u1"
        if n % 3 and not alerting:  # a third of the plain ones (the time it takes), all that alert
            continue
        entries = doc.get("entries") or []
        if (
            not entries
            or any(not isinstance(e, dict) for e in entries)
            or doc["patients"] != base([], None)["patients"]
        ):
            continue
        together = await loaded.evaluate(RESPONSE_DECISION, doc)
        for e, verdict in zip(entries, together["verdicts"], strict=True):
            alone = await loaded.evaluate(RESPONSE_DECISION, dict(doc, entries=[e]))
            assert normalise(alone["verdicts"][0]) == normalise(verdict), (doc["subject"], e)
            if not together["obligations"]:
                assert alone["obligations"] == []
            checked += 1
    assert checked > 200 and len(ENTRIES) + len(VARIANT_ENTRIES) > 20


async def test_valid_until_is_never_late_on_the_parity_table(loaded: EmbeddedEngine) -> None:
    """For every input with grants: asked anywhere in [time, valid_until) the policy answers the same."""
    cases = [(REQUEST_DECISION, d) for d in request_inputs()] + [
        (RESPONSE_DECISION, d) for d in response_inputs()
    ]
    # Every input at the edges of a grant's window, a fifth of the others (the time it takes).
    cases = [(p, d) for n, (p, d) in enumerate(cases) if d["time"] != T0 or n % 5 == 0]
    bounded = 0
    for path, doc in cases:
        grants = (doc.get("subject") or {}).get("grants")
        if not grants or utc_ns(doc.get("time")) is None:
            continue
        answer = await loaded.evaluate(path, doc)
        t0, until = utc_ns(doc["time"]), answer.get("valid_until")
        assert until is None or isinstance(until, str)
        end = utc_ns(until) if until else t0 + 400 * 86400 * 10**9  # type: ignore[operator]
        if end is None or end <= t0:  # type: ignore[operator]
            continue  # holds for no later instant: never reused
        bounded += until is not None
        for t in ((t0 + end) // 2, end - 1):  # type: ignore[operator]
            when = (
                datetime.fromtimestamp(t // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{t % 10**9:09d}Z"
            )
            assert normalise(await loaded.evaluate(path, dict(doc, time=when))) == normalise(answer), (
                doc,
                when,
            )
    assert bounded > 50


# --- /metrics ---------------------------------------------------------------------------------------


async def test_metrics_in_the_prometheus_text_format(make_settings: Any) -> None:
    app = create_app(make_settings("http://127.0.0.1:9/fhir/R4"))
    gateway = app[GATEWAY]
    gateway.engine.cache = DecisionCache(5)
    gateway.engine.cache.hits["request"] = 7
    gateway.engine.cache.misses["response_entry"] = 2
    response = await metrics(make_mocked_request("GET", "/metrics", app=app))
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.body.decode()  # type: ignore[union-attr]
    assert 'emrguard_decision_cache_hits_total{decision="request"} 7\n' in text
    assert 'emrguard_decision_cache_misses_total{decision="response_entry"} 2\n' in text
    assert "# TYPE emrguard_decision_cache_hits_total counter\n" in text
    assert "emrguard_decision_cache_capacity 5\n" in text and "emrguard_decision_cache_entries 0\n" in text
    assert any(r.resource is not None and r.resource.canonical == "/metrics" for r in app.router.routes())


# --- through the gateway, against the real FHIR server ----------------------------------------------


@pytest.mark.integration
async def test_through_the_gateway_reads_hit_and_a_seal_takes_effect_at_once(
    aiohttp_client: Any, make_settings: Any, fhir_server: Any, idp: Any
) -> None:
    from plugins.seal.store import SealStore
    from tests.test_access_model import Story, rules

    settings = make_settings(fhir_server.base)
    story = Story(await aiohttp_client(create_app(settings)), settings, fhir_server, idp)
    p = await story.patient("cardiology", {"code": {"text": "hypertension"}})
    for _ in range(3):
        status, _body = await story.get(f"/fhir/{p['patient']}", "nurse", "nurse-zhao", "cardiology")
        assert status == 200
        status, body = await story.get(
            f"/fhir/Condition?subject={p['patient']}", "nurse", "nurse-zhao", "cardiology"
        )
        assert status == 200 and len(body["entry"]) == 1
    cache = decision_cache(story.client.server.app[GATEWAY])
    assert cache.hits["request"] == 4 and cache.hits["response_entry"] == 4
    await SealStore(story.store).seal_patient(p["patient"], "media event", "舆情-2026-099", [], by="rec-chen")
    status, body = await story.get(f"/fhir/{p['patient']}", "nurse", "nurse-zhao", "cardiology")
    assert status == 403 and "seal.sealed" in rules(body)


async def test_metrics_through_the_edge(aiohttp_client: Any, make_settings: Any) -> None:
    client = await aiohttp_client(create_app(make_settings("http://127.0.0.1:9/fhir/R4")))
    resp = await client.get("/metrics")
    assert resp.status == 200 and "emrguard_decision_cache_hits_total" in await resp.text()
