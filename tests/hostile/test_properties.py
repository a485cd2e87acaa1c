"""Property-based tests of the response filter and the parser (issue "nothing leaks", deliver 10).

Generated responses (tests/hostile/strategies.py) mix the records of a patient the operator may see
(V) and of one they may not (P) in every container and reference shape, and are judged as the
pipeline judges them (gateway/fhir/resources.py `collect`, gateway/decide.py `judge` with the real
policy on the embedded engine, gateway/fhir/filter.py `apply_verdicts`). A leak is judged by
content: P's id, name and identifier values and the ids of P's records appear nowhere in what is
released. Beside it: what cannot be tied to a patient is the unresolved patient, which care-bound
roles never see; the parser and the filter never crash on arbitrary input; a filtered body is
filtered again to itself; a document is released whole or withheld whole.

Example counts are bounded (and derandomised, no example database) so the file runs in well under
a minute on a loaded machine and CI is reproducible.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import rules
from gateway.auth import Operator
from gateway.config import Settings
from gateway.context import RequestContext
from gateway.decide import judge
from gateway.errors import GatewayError, Reason, operation_outcome
from gateway.fhir.filter import FilterResult, Pseudonymiser, apply_verdicts
from gateway.fhir.params import check_format, parse_params, patients_in_params
from gateway.fhir.request import decided_bundle, parse_request
from gateway.fhir.resources import UNRESOLVED_PATIENT, Slot, collect, resource_patients
from gateway.policy import Verdict
from gateway.policy.embedded import EmbeddedEngine
from tests.conftest import POLICY_DIR
from tests.hostile import strategies as gen


def bounded(examples: int) -> settings:
    """Bounded and reproducible: the whole file runs in well under 60 s on a loaded 2-core machine,
    the same examples every run (derandomised, no example database)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


#: The gateway's pseudonym key; a request whose purpose is pseudonymised (HRESCH) gets its study's.
PSEUDONYMS = Pseudonymiser("property-tests-pseudonym-secret-0123456789")
PSEUDONYMISED = frozenset({"HRESCH"})


@cache
def engine() -> EmbeddedEngine:
    """The real policy, on the embedded engine (loaded once, on the thread the tests run on)."""
    e = EmbeddedEngine(POLICY_DIR, timeout=30)
    e.load()
    return e


class Upstream:
    """The FHIR server, for the records a describing resource is about (gateway/decide.py reads them
    in one batch): answers from the world's store, 404 for what it does not hold."""

    def __init__(self, store: dict[str, dict[str, Any]]) -> None:
        self.store = store

    async def send(
        self, method: str, path: str, query: str, headers: Any, body: bytes, *a: Any, **k: Any
    ) -> Any:
        entries = []
        for e in orjson.loads(body)["entry"]:
            found = self.store.get(e["request"]["url"])
            entries.append(
                {"resource": copy.deepcopy(found), "response": {"status": "200 OK"}}
                if found
                else {"response": {"status": "404 Not Found"}}
            )
        return SimpleNamespace(
            status=200, body={"resourceType": "Bundle", "type": "batch-response", "entry": entries}
        )


class Facts:
    """The care and seal plugins' `before_response_decision`: each patient's departments, care team
    and seal; a patient the EMR does not know (and the unresolved patient) has none."""

    def __init__(self, known: dict[str, dict[str, Any]]) -> None:
        self.known = known

    async def before_response_decision(self, ctx: RequestContext, patients: set[str]) -> None:
        for p in patients:
            ctx.patient_context.setdefault(p, copy.deepcopy(self.known.get(p) or gen.facts([])))


@dataclass
class Released:
    status: int
    body: Any  # what the operator receives: the filtered body, or the 403 OperationOutcome
    result: FilterResult
    slots: list[Slot]
    verdicts: list[Verdict]

    def text(self) -> str:
        return json.dumps(self.body, ensure_ascii=False)


def gateway(world: gen.World) -> Any:
    """What gateway/decide.py uses of the Gateway: the engine, the response hooks, the upstream and
    the settings (defaults)."""
    return SimpleNamespace(
        engine=engine(), hooks=Facts(world.facts()), upstream=Upstream(world.store), settings=Settings()
    )


def decision_input(world: gen.World, ctx: RequestContext) -> dict[str, Any]:
    """As the pipeline makes it (RequestContext.decision_input): `patients` is the live context the
    response hooks fill in."""
    return {
        "subject": world.subject(),
        "purpose": world.purpose,
        "break_glass": world.break_glass(),
        "time": gen.NOW,
        "request_id": ctx.request_id,
        "action": {"interaction": "search-type", "method": "GET", "level": "type", "operation": None,
                   "conditional": False},
        "target": {"type": "Observation", "id": None, "compartment": None,
                   "patients": [world.visible.ref] if world.break_glass() else [], "params": {},
                   "if_none_exist": {}, "entries": []},
        "patients": ctx.patient_context,
    }  # fmt: skip


def release(world: gen.World, body: Any) -> Released:
    """Step 7 of gateway/pipeline.py: collect, judge (one response decision), filter; a withheld
    root is the gateway's 403."""
    ctx = RequestContext("req-prop", "GET", "Observation", "", None, None, {})
    ctx.operator = Operator(gen.OPERATOR, "测试", (world.role,), gen.DEPT, "h1")
    ctx.purpose = world.purpose
    gw = gateway(world)
    slots = collect(body)
    verdicts = asyncio.run(judge(gw, ctx, decision_input(world, ctx), slots))
    result = apply_verdicts(body, slots, verdicts, PSEUDONYMS if world.purpose in PSEUDONYMISED else None)
    if result.root_dropped:
        withheld = Reason(rules.POLICY_WITHHELD, "the resource is withheld by policy", "该资源依策略不予提供")
        outcome = operation_outcome(
            GatewayError(403, "forbidden", result.root_reasons or [withheld]), "req-prop"
        )
        return Released(403, outcome, result, slots, verdicts)
    return Released(200, body, result, slots, verdicts)


def leaks(world: gen.World, released: Released) -> list[str]:
    text = released.text()
    return sorted(s for s in world.secrets if s in text)


# --- 1. nothing of a hidden patient survives the filter --------------------------------------------


@bounded(500)
@given(gen.scenarios())
def test_nothing_of_a_hidden_patient_survives_the_filter(scenario: tuple[gen.World, dict[str, Any]]) -> None:
    """P's id, name, identifier values and the ids of P's records (and of records about them) appear
    nowhere in what is released — the filtered body or the 403 — whatever shape carried them, and
    the audit names no P; V's plain records on the page are released."""
    world, body = scenario
    sent = copy.deepcopy(body)
    released = release(world, body)
    assert not leaks(world, released), (
        world.role,
        world.purpose,
        world.hidden_by,
        leaks(world, released),
        sent,
    )
    assert world.hidden.ref not in released.result.disclosed_patients  # nor does the audit say so
    # Not by withholding everything: V's plain records at the top of a page are released.
    # (Pharmacists read some types only; research ids are pseudonyms.)
    if released.status == 200 and world.role != "pharmacist" and world.purpose not in PSEUDONYMISED:
        text = released.text()
        assert all(rid in text for rid in world.must_keep), (world.must_keep, sent)


# --- 2. what cannot be tied to a patient is the unresolved patient (fail closed) -------------------


@bounded(100)
@given(gen.unattributable())
def test_a_record_no_reference_ties_to_a_patient_is_the_unresolved_patients(
    case: tuple[gen.World, dict[str, Any], str, str],
) -> None:
    world, body, rid, shape = case
    sent = copy.deepcopy(body)
    record = body["entry"][0]["resource"] if body["resourceType"] == "Bundle" else body
    (slot,) = [s for s in collect(body) if s.resource is record]
    assert UNRESOLVED_PATIENT in slot.summary()["patients"], (shape, sent)  # what the policy is told
    released = release(world, body)
    judged = [v for s, v in zip(released.slots, released.verdicts, strict=True) if s.resource is record]
    assert len(judged) == 1, sent
    text = released.text()
    if world.care_bound:  # care-bound: withheld, and nothing of the person is released
        assert not judged[0]["keep"], (world.role, shape, sent)
        assert rid not in text and gen.NOBODY.name not in text and gen.NOBODY.mrn not in text, (shape, text)
    else:  # hospital-wide scope for the purpose: the unresolved patient is theirs to see
        assert judged[0]["keep"], (world.role, shape, sent)
        if released.status == 200 and world.purpose not in PSEUDONYMISED:
            assert rid in text, (shape, text)


# --- 3. the parser and the filter never crash -----------------------------------------------------

verdicts = st.fixed_dictionaries(
    {"keep": st.booleans()},
    optional={
        "redact": st.lists(
            st.sampled_from(gen.FHIR_KEYS + ["subject.display", "entry.resource", "a.b.c"]), max_size=3
        ),
        "transform": st.lists(
            st.sampled_from(
                [
                    {"op": "year", "path": "birthDate"},
                    {"op": "year", "path": "subject"},
                    {"op": "drop_reference_display"},
                    {"op": "keep_only", "fields": ["code", "status"]},
                    {"op": "keep_only", "fields": []},
                ]
            ),
            max_size=2,
        ),
        "pseudonymise": st.booleans(),
        "reasons": st.just([{"rule": "r", "en": "e", "zh": "z", "clause": "I.4"}]),
    },
)


@bounded(200)
@given(gen.any_body())
def test_collect_never_crashes(body: Any) -> None:
    """Whatever the upstream answers: every resource found, tied to its patients and summarised as
    JSON the engine takes, without an exception."""
    slots = collect(body)
    orjson.dumps([s.summary() for s in slots])
    for slot in slots:
        resource_patients(slot.resource)


#: Bodies the filter crashed on (issue 13 property tests; gateway/fhir/filter.py and pseudonyms.py).
FILTER_CRASHES: list[Any] = [
    {"resourceType": "Bundle", "type": {"code": "searchset"}, "entry": []},  # unhashable Bundle.type
    {"resourceType": "Bundle", "type": "history", "entry": True},  # Bundle.entry not an array
    {"resourceType": "Parameters", "parameter": 324},  # Parameters.parameter not an array
    {  # entry.search not an object
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": "o1"}, "search": "match"}],
    },
    {  # a withheld batch-response entry whose response is not an object
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [{"resource": {"resourceType": "Observation", "id": "o1"}, "response": "200 OK"}],
    },
]


def _with_examples(test: Any) -> Any:
    for body in FILTER_CRASHES:
        test = example(body, [{"keep": False}])(test)
    return test


@pytest.mark.xfail(
    strict=True,
    raises=(TypeError, AttributeError, ExceptionGroup),
    reason="bug (issue 13 properties): apply_verdicts crashes (TypeError/AttributeError) on a malformed "
    "upstream answer instead of filtering it: Bundle.type not a string, Bundle.entry / "
    "Parameters.parameter not arrays, entry.search / entry.response not objects (FILTER_CRASHES)",
)
@bounded(200)
@_with_examples
@given(gen.any_body(), st.lists(verdicts, min_size=1, max_size=4))
def test_the_filter_never_crashes(body: Any, chosen: list[dict[str, Any]]) -> None:
    """Under any verdicts (kept, withheld, redacted, transformed, pseudonymised), on whatever the
    upstream answered."""
    slots = collect(body)
    apply_verdicts(body, slots, [chosen[i % len(chosen)] for i in range(len(slots))], PSEUDONYMS)  # type: ignore[misc]


PEOPLE = (
    gen.Person("vis-1", "王伟", "MRN-V1", "31010119850101000X"),
    gen.Person("hid-1", "洪玉英", "MRN-H1", "110101199003070001"),
)


@bounded(100)
@given(gen.any_body(), st.sampled_from(gen.CARE_BOUND + gen.HOSPITAL_WIDE))
def test_judging_any_answer_decides_or_fails_closed(body: Any, operator: tuple[str, str]) -> None:
    """The real policy on whatever came back: one verdict per resource, or the gateway's own
    refusal (no decision, or a described record unreadable: 502/503), never another exception."""
    world = gen.World(operator[0], operator[1], *PEOPLE, hidden_by="care")
    ctx = RequestContext("req-prop", "GET", "Observation", "", None, None, {})
    gw = gateway(world)
    slots = collect(body)
    try:
        decided = asyncio.run(judge(gw, ctx, decision_input(world, ctx), slots))
    except GatewayError as exc:
        assert exc.status in (502, 503), exc.status
        return
    assert len(decided) == len(slots)


def _parsed(call: Any) -> Any:
    try:
        return call()
    except GatewayError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.reasons)
        return None


@bounded(250)
@given(gen.requests())
def test_parse_request_never_crashes(request: tuple[str, str, list[tuple[str, str]], Any]) -> None:
    """A request the gateway does not understand is a 400-class GatewayError, never another
    exception; what it accepts becomes a policy input (JSON) and, for a batch, the Bundle sent."""
    method, path, query, body = request
    req = _parsed(lambda: parse_request(method, path, query, body))
    if req is None:
        return
    orjson.dumps(req.to_policy())
    if req.interaction in ("batch", "transaction"):
        orjson.dumps(decided_bundle(body))


@bounded(200)
@given(
    st.sampled_from([None, "Patient", "Observation", "Group", "Bundle"]), gen.queries, st.text(max_size=30)
)
def test_parameters_never_crash(rtype: str | None, query: list[tuple[str, str]], accept: str) -> None:
    params = _parsed(lambda: parse_params(query))
    if params is None:
        return
    patients = _parsed(lambda: patients_in_params(rtype, params))
    assert patients is None or all(p.startswith("Patient/") for p in patients)
    _parsed(lambda: check_format(params, accept))


# --- 4. a filtered body is filtered to itself ------------------------------------------------------


@bounded(200)
@given(gen.scenarios(about_local=False))
def test_a_filtered_body_filters_to_itself(scenario: tuple[gen.World, dict[str, Any]]) -> None:
    """What the gateway released, judged again for the same operator, comes out unchanged: nothing
    in it would be withheld, redacted or recounted (research pseudonyms aside: they are not ids the
    server knows)."""
    world, body = scenario
    first = release(world, body)
    if first.status != 200 or world.purpose in PSEUDONYMISED:
        return
    once = copy.deepcopy(first.body)
    second = release(world, first.body)
    assert second.status == 200 and second.body == once, (once, second.body)


# --- 5. a document is released whole or withheld whole ---------------------------------------------


def _documents(node: Any, found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every document Bundle in a body, by id."""
    if isinstance(node, dict):
        if node.get("resourceType") == "Bundle" and node.get("type") == "document" and "id" in node:
            found[node["id"]] = node
        for v in node.values():
            _documents(v, found)
    elif isinstance(node, list):
        for v in node:
            _documents(v, found)
    return found


def _shape(document: dict[str, Any], pseudonymised: bool) -> list[tuple[Any, ...]]:
    """Its entries, in order: fullUrl, type and id (for research, whose ids are pseudonyms: types)."""
    if pseudonymised:
        return [(e["resource"].get("resourceType"),) for e in document["entry"]]
    return [
        (e.get("fullUrl"), e["resource"].get("resourceType"), e["resource"].get("id"))
        for e in document["entry"]
    ]


@bounded(150)
@given(gen.documents())
def test_a_document_is_released_whole_or_withheld_whole(scenario: tuple[gen.World, dict[str, Any]]) -> None:
    """Each document in a response is either absent from what is released or there with every
    entry it had, in order, none of them withheld by the policy (never with entries cut out)."""
    world, body = scenario
    research = world.purpose in PSEUDONYMISED
    before = {id(d): _shape(d, research) for d in _documents(body, {}).values()}
    released = release(world, body)
    after = {id(d): d for d in _documents(released.body, {}).values()} if released.status == 200 else {}
    for key, entries in before.items():
        if key in after:  # the same document, released: all of it
            assert _shape(after[key], research) == entries, (entries, _shape(after[key], research))
    for slot in released.slots:
        if id(slot.resource) in after:
            inside = f"{slot.path}." if slot.path else ""
            withheld = [
                s.path
                for s, v in zip(released.slots, released.verdicts, strict=True)
                if s.path.startswith(inside) and s is not slot and not v["keep"]
            ]
            assert not withheld, (slot.path, withheld)


# --- what the properties found ---------------------------------------------------------------------
#
# Fixed in gateway/fhir/resources.py (kept here, with the example that found each):
#   - an Appointment naming its patient by display only (participant.actor) was nobody's;
#   - a describing resource naming its record with the type in another case (`condition/x`) was
#     not judged with it, and released that record's id (now gateway/fhir/about.py);
#   - collect() crashed on malformed upstream answers (test_collect_never_crashes).
# Fixed in gateway/fhir/filter.py while this was written: a page whose matches were all withheld
# said `total: 0` (test_a_page_whose_matches_are_all_withheld_is_a_page_that_matched_nothing).
# Open (xfail, strict: each test passes once its bug is fixed, and the mark must then go):
#   PARAMETERS_VALUE_BUG (below; ABOUT_LOCAL_BUG, HISTORY_DELETE_BUG and EMBEDDED_PATIENT_BUG are fixed) and
#   the filter's crashes (test_the_filter_never_crashes).

V, P = PEOPLE


def _world(role: str = "nurse", purpose: str = "TREAT", hidden_by: str = "care") -> gen.World:
    return gen.World(role, purpose, V, P, hidden_by)


def _page(*resources: dict[str, Any], urls: list[str] | None = None) -> dict[str, Any]:
    urls = urls or [f"{gen.HOST}/{r['resourceType']}/{r['id']}" for r in resources]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": u, "resource": r, "search": {"mode": "match"}}
            for u, r in zip(urls, resources, strict=True)
        ],
    }


APPOINTMENT = {
    "resourceType": "Appointment",
    "id": "hid-a1",
    "status": "booked",
    "participant": [{"actor": {"display": P.name}, "status": "accepted"}],
}


@bounded(20)
@example(_page(APPOINTMENT))
@given(
    st.sampled_from([{"display": P.name}, {"display": f"{P.name} {P.national_id}"}]).map(
        lambda actor: _page({**APPOINTMENT, "participant": [{"actor": actor, "status": "accepted"}]})
    )
)
def test_an_appointment_naming_its_patient_by_display_only_is_withheld(body: dict[str, Any]) -> None:
    """Fixed: `actor` is the Patient compartment's element of an Appointment (resources.PATIENT_ELEMENTS)."""
    world = _world()
    assert not leaks(world, release(world, copy.deepcopy(body)))


PROVENANCE = {
    "resourceType": "Provenance",
    "id": "vis-pv1",
    "target": [{"reference": "condition/hid-c1"}],
    "recorded": "2026-11-30T10:00:00Z",
    "agent": [{"who": {"reference": "Practitioner/dr-li"}}],
}
P_CONDITION = {
    "resourceType": "Condition",
    "id": "hid-c1",
    "subject": {"reference": f"Patient/{P.id}"},
    "code": {"text": "x"},
}


@bounded(20)
@example("condition/hid-c1")
@given(st.sampled_from(["condition/hid-c1", "CONDITION/hid-c1", f"{gen.HOST}/condition/hid-c1/_history/1"]))
def test_a_describing_resource_naming_its_record_in_another_case_is_judged_with_it(ref: str) -> None:
    """Fixed: resources.about_references reads the type of a literal reference in any case."""
    world = _world()
    world.store["Condition/hid-c1"] = copy.deepcopy(P_CONDITION)
    world.secrets.add("hid-c1")
    body = _page({**PROVENANCE, "target": [{"reference": ref}]})
    assert not leaks(world, release(world, body))


GRADE_5 = {"coding": [{"system": gen.ICD, "code": "B20"}]}
ABOUT_LOCAL_BUG = (
    "fixed (issue 13 class 10, gateway/decide.py _local_targets): a describing resource (Provenance, "
    "List, ...) whose record is reached by urn:uuid or `#id` was not judged with it: the record was "
    "withheld (here by grade) and the Provenance about it released"
)


@bounded(10)
@example("urn")
@example("contained")
@given(st.sampled_from(["urn", "contained"]))
def test_a_record_about_a_withheld_record_is_withheld_however_it_points(how: str) -> None:
    """A nurse (TREAT, grade 4) may see V, but not V's grade-5 Condition, nor a Provenance about it."""
    world = _world()
    condition = {
        "resourceType": "Condition",
        "id": "vis-c5",
        "subject": {"reference": V.ref},
        "code": GRADE_5,
    }
    if how == "urn":
        provenance = {**PROVENANCE, "id": "vis-pv5", "target": [{"reference": "urn:uuid:c5"}]}
        body = _page(condition, provenance, urls=["urn:uuid:c5", "urn:uuid:pv5"])
    else:
        provenance = {
            **PROVENANCE,
            "id": "vis-pv5",
            "contained": [{**condition, "id": "c5"}],
            "target": [{"reference": "#c5"}],
        }
        body = _page(provenance)
    released = release(world, body)
    assert "vis-pv5" not in released.text()


EMBEDDED_PATIENT_BUG = (
    "fixed (issue 13, gateway/fhir/resources.py _embedded_id): a Patient embedded in a stored Bundle "
    "(collection, document) was judged only as the unresolved patient, even with a server id: a "
    "hospital-wide role (records officer, HOPERAT) got a sealed patient's Patient inside a stored "
    "collection; now Patient/<id> counts beside the unresolved patient"
)


@bounded(10)
@example("collection", "records_officer", "HOPERAT")
@given(st.sampled_from(["collection", "document"]), *map(st.just, ("records_officer", "HOPERAT")))
def test_an_embedded_patient_is_also_the_patient_it_names(kind: str, role: str, purpose: str) -> None:
    world = _world(role, purpose, hidden_by="seal")
    entries = [{"fullUrl": f"{gen.HOST}/Patient/{P.id}", "resource": P.patient(P.id)}]
    if kind == "document":
        composition = {"resourceType": "Composition", "id": "vis-comp", "status": "final", "type": {"text": "x"},
                       "date": "2026-11-30", "author": [{"display": "ward"}], "title": "t",
                       "subject": {"reference": f"{gen.HOST}/Patient/{P.id}"}}  # fmt: skip
        entries.insert(0, {"fullUrl": "urn:uuid:comp", "resource": composition})
    body = {"resourceType": "Bundle", "type": kind, "id": "vis-b1", "entry": entries}
    assert not leaks(world, release(world, body))


HISTORY_DELETE_BUG = (
    "fixed (issue 13, gateway/fhir/filter.py): a history entry without a resource (a deleted version) "
    "was not judged: its request.url named the record and, for Patient/_history, the patient; such "
    "entries are now left out of history pages"
)


@bounded(10)
@example(f"Patient/{P.id}")
@given(st.sampled_from([f"Patient/{P.id}", f"Patient/{P.id}/_history/3", "Condition/hid-c1"]))
def test_a_deleted_version_in_a_history_names_no_one_the_operator_may_not_see(url: str) -> None:
    world = _world()
    world.secrets.add("hid-c1")
    observation = {"resourceType": "Observation", "id": "vis-o1", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": V.ref}}  # fmt: skip
    body = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {"fullUrl": f"{gen.HOST}/Observation/vis-o1", "resource": observation,
             "request": {"method": "PUT", "url": "Observation/vis-o1"}, "response": {"status": "200 OK"}},
            {"request": {"method": "DELETE", "url": url}, "response": {"status": "204 No Content"}},
        ],
    }  # fmt: skip
    released = release(world, body)
    assert "vis-o1" in released.text() and not leaks(world, released)


PARAMETERS_VALUE_BUG = (
    "bug (issue 13, gateway/fhir/resources.py collect + filter.py): a Parameters answer is a carrier: "
    "its resources are judged, its own values (valueReference, valueIdentifier, valueString) are not, "
    "and a patient the operator may not see is released by reference and name"
)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=PARAMETERS_VALUE_BUG)
@bounded(10)
@example({"reference": P.ref, "display": P.name})
@given(st.sampled_from([{"reference": P.ref}, {"display": P.name}, {"identifier": P.identifiers()[0]}]))
def test_a_parameters_answer_names_no_one_the_operator_may_not_see(value: dict[str, Any]) -> None:
    world = _world()
    body = {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueReference": value}]}
    assert not leaks(world, release(world, body))


@bounded(10)
@example(1)
@given(st.integers(1, 3))
def test_a_page_whose_matches_are_all_withheld_is_a_page_that_matched_nothing(n: int) -> None:
    """Found (then fixed in gateway/fhir/filter.py while this was written): such a page had
    `total: 0`, a page that matched nothing no total — telling that withheld matches exist."""
    world = _world()
    observations = [
        {"resourceType": "Observation", "id": f"hid-o{i}", "status": "final", "code": {"text": "x"},
         "subject": {"reference": P.ref}}
        for i in range(n)
    ]  # fmt: skip
    withheld = {**_page(*observations), "total": n}
    nothing = {"resourceType": "Bundle", "type": "searchset", "total": 0}  # what the upstream says then
    assert release(world, withheld).body == release(world, nothing).body
