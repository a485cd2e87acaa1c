"""Red team, round two: where round one (tests/hostile/test_redteam.py) did not go.

Includes and reverse includes, sorted pages followed through the gateway's look-ahead, `$everything`
and history with `_count`/`_since`, HEAD/OPTIONS, formats, `_elements`/`_summary`, `Prefer` on
writes, conditional create, `_id` lists, `_lastUpdated` ranges, stored Bundles of other types,
attachments and Binary, Media/ImagingStudy, Group/Person/RelatedPerson, pseudonyms across studies,
and the audit record of all of them. Every test asserts the SAFE behaviour: a failing test is a leak.

The world of round one is reused (its fixtures and helpers are imported); this round adds its own
twins — pairs of cardiology patients alike but for one record the nurse may not see (HIV, grade 5).
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.hostile import test_redteam as _rt
from tests.hostile.test_redteam import (
    HIV_CODE,
    I10_CODE,
    ICD10,
    ROLES,
    Answer,
    Gw,
    World,
    _cardiology_patient,
    _condition,
    _must,
    _next_query,
    _post,
    assert_audited_disclosure,
    assert_no_leak,
    patients_in_body,
    send,
    shape,
    shown,
)

#: Round one's fixtures: its world of patients and its gateway per upstream and engine.
gw = _rt.gw
world = _rt.world

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ENC_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
DEPT = "https://emrguard.example/fhir/CodeSystem/department"
HIV_IDENT_SYSTEM = "urn:oid:2.16.156.emrguard.redteam2"


def _encounter(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": ENC_CLASS,
        "subject": {"reference": f"Patient/{patient}"},
        "serviceType": {"coding": [{"system": DEPT, "code": "cardiology"}]},
    }


def _cond(patient: str, code: dict[str, Any], day: str, **more: Any) -> dict[str, Any]:
    return {**_condition(patient, code, day), **more}


async def _twins(base: str, tag: str) -> tuple[str, str]:
    """Two cardiology patients made alike; ids of the same length (so no answer differs by length)."""
    for _ in range(20):
        a = await _cardiology_patient(base, f"红队二{tag}甲")
        b = await _cardiology_patient(base, f"红队二{tag}乙")
        if len(a) == len(b):
            return a, b
    raise AssertionError("no twins of equal id length")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def more(world: World) -> dict[str, str]:
    """This round's records, written straight to the FHIR server."""
    base, v = world.base, world.v
    out: dict[str, str] = {}
    # Include twins: each has a second encounter; E's HIV diagnosis (only) points to it.
    e, f = await _twins(base, "含")
    for who, key in ((e, "E"), (f, "F")):
        enc = await _must(base, _encounter(who))
        await _must(base, _cond(who, I10_CODE, "2026-02-01"))
        out[key], out[f"{key}ENC"] = who, enc["id"]
    ehiv = await _must(
        base,
        _cond(e, HIV_CODE, "2026-02-02", encounter={"reference": f"Encounter/{out['EENC']}"}),
    )
    out["EHIV"] = ehiv["id"]
    # Cursor twins: C has ten I10 and one HIV recorded first; D ten I10.
    c, d = await _twins(base, "游")
    for who in (c, d):
        for day in range(10, 20):
            await _must(base, _cond(who, I10_CODE, f"2026-01-{day}"))
    chiv = await _must(base, _cond(c, HIV_CODE, "2026-01-01"))
    out.update(C=c, D=d, CHIV=chiv["id"])
    # Look-ahead twins: G has one I10 then six HIV; H one I10. With upstream pages of one entry
    # ($everything, history keep the client's _count) the look-ahead stops after four.
    g, h = await _twins(base, "尽")
    for who in (g, h):
        await _must(base, _cond(who, I10_CODE, "2026-01-01"))
    for day in range(2, 8):
        await _must(base, _cond(g, HIV_CODE, f"2026-01-0{day}"))
    out.update(G=g, H=h)
    # Conditional create: K (a cardiology patient) has an HIV diagnosis with a unique identifier.
    k = await _cardiology_patient(base, "红队二条件")
    khiv = await _must(
        base,
        _cond(k, HIV_CODE, "2026-03-03", identifier=[{"system": HIV_IDENT_SYSTEM, "value": "RT2-HIV-K"}]),
    )
    out.update(K=k, KHIV=khiv["id"])
    # An I10 condition of P3 that names P2's observation (not an "about" element: evidence.detail).
    ev = await _post(
        base,
        _cond(
            v["P3"],
            I10_CODE,
            "2026-02-05",
            evidence=[{"detail": [{"reference": f"Observation/{v['P2OBS']}"}]}],
        ),
    )
    out["EVID"] = ev["id"] if ev else ""
    # An observation of P3 whose focus is P2's observation, and one whose hasMember is.
    focus = await _post(
        base,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "rt2 focus"},
            "subject": {"reference": f"Patient/{v['P3']}"},
            "focus": [{"reference": f"Observation/{v['P2OBS']}"}],
        },
    )
    out["FOCUS"] = focus["id"] if focus else ""
    panel = await _must(
        base,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "rt2 panel"},
            "subject": {"reference": f"Patient/{v['P3']}"},
            "hasMember": [{"reference": f"Observation/{v['P2OBS']}"}],
        },
    )
    out["PANEL"] = panel["id"]
    # Records of P3/P7 (visible to the nurse) that name a withheld record in a non-"about" element.
    p3, p7 = f"Patient/{v['P3']}", f"Patient/{v['P7']}"
    obs3 = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "rt2 ref"},
        "subject": {"reference": p3},
    }
    refs = {
        "REFOBSENC": {**obs3, "encounter": {"reference": f"Encounter/{v['P2ENC']}"}},
        "REFCONDENC": {
            **_condition(v["P3"], I10_CODE),
            "encounter": {"reference": f"Encounter/{v['P2ENC']}"},
        },
        "REFENCPARTOF": {**_encounter(v["P3"]), "partOf": {"reference": f"Encounter/{v['P2ENC']}"}},
        "REFSTAGE": {
            **_condition(v["P3"], I10_CODE),
            "stage": [{"assessment": [{"reference": f"Observation/{v['P2OBS']}"}]}],
        },
        "REFEVIDHIV": {
            **_condition(v["P7"], I10_CODE),
            "evidence": [{"detail": [{"reference": f"Condition/{v['HIV']}", "display": "HIV"}]}],
        },
        "REFCOMPLICATION": {
            "resourceType": "Procedure",
            "status": "completed",
            "subject": {"reference": p7},
            "code": {"text": "rt2 procedure"},
            "complication": [{"text": "see record"}],
            "complicationDetail": [{"reference": f"Condition/{v['HIV']}"}],
        },
        "REFSUPPORTING": {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": p7},
            "code": {"text": "rt2 referral"},
            "supportingInfo": [{"reference": f"Condition/{v['HIV']}"}],
        },
        "REFDRENC": {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": {"text": "rt2 report"},
            "subject": {"reference": p3},
            "encounter": {"reference": f"Encounter/{v['P2ENC']}"},
        },
        "REFCOMMPARTOF": {
            "resourceType": "Communication",
            "status": "completed",
            "subject": {"reference": p7},
            "partOf": [{"reference": f"Condition/{v['HIV']}"}],
            "payload": [{"contentString": "rt2"}],
        },
    }
    for key, res in refs.items():
        made = await _post(base, res)
        out[key] = made["id"] if made else ""
    # Stored Bundles of other types: a message and a transaction about P2.
    p2 = await _get_json(base, f"Patient/{v['P2']}")
    p2.pop("meta", None)
    for kind in ("message", "transaction", "collection"):
        entries: list[dict[str, Any]] = []
        if kind == "message":
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": {
                        "resourceType": "MessageHeader",
                        "eventCoding": {"system": "urn:rt2", "code": "admit"},
                        "source": {"endpoint": "urn:rt2"},
                        "focus": [{"reference": f"Patient/{v['P2']}"}],
                    },
                }
            )
        pe: dict[str, Any] = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": p2}
        ce: dict[str, Any] = {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {
                "resourceType": "Condition",
                "subject": {"reference": pe["fullUrl"]},
                "code": {"coding": [{"system": ICD10, "code": "F32"}], "text": "抑郁"},
            },
        }
        if kind == "transaction":
            pe["request"] = {"method": "POST", "url": "Patient"}
            ce["request"] = {"method": "POST", "url": "Condition"}
        made = await _post(
            base,
            {
                "resourceType": "Bundle",
                "type": kind,
                "timestamp": "2026-02-02T00:00:00Z",
                "entry": [*entries, pe, ce],
            },
        )
        out[f"BUNDLE{kind.upper()}"] = made["id"] if made else ""
    # Attachments: a DocumentReference with no subject whose base64 text names P2; one of P2.
    p2name, p2mrn = p2["name"][0]["text"], v["P2MRN"]
    text = base64.b64encode(f"出院小结 {p2name} {p2mrn} 抑郁发作 F32".encode()).decode()
    for key, subject in (("DOCNOSUBJ", None), ("DOCP2", f"Patient/{v['P2']}")):
        doc: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": text}}],
        }
        if subject:
            doc["subject"] = {"reference": subject}
        made = await _post(base, doc)
        out[key] = made["id"] if made else ""
    for key, ctx in (("BINNOCTX", None), ("BINP2", f"Patient/{v['P2']}")):
        binary: dict[str, Any] = {"resourceType": "Binary", "contentType": "text/plain", "data": text}
        if ctx:
            binary["securityContext"] = {"reference": ctx}
        made = await _post(base, binary)
        out[key] = made["id"] if made else ""
    media = await _post(
        base,
        {
            "resourceType": "Media",
            "status": "completed",
            "subject": {"reference": f"Patient/{v['P2']}"},
            "content": {"contentType": "text/plain", "data": text},
        },
    )
    out["MEDIA"] = media["id"] if media else ""
    study = await _post(
        base,
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": f"Patient/{v['P2']}"},
            "description": "头颅 MRI 精神科",
        },
    )
    out["IMAGING"] = study["id"] if study else ""
    group = await _post(
        base,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "name": "rt2 ward list",
            "member": [
                {"entity": {"reference": f"Patient/{v['P3']}"}},
                {"entity": {"reference": f"Patient/{v['P2']}"}},
            ],
        },
    )
    out["GROUP"] = group["id"] if group else ""
    person = await _post(
        base,
        {
            "resourceType": "Person",
            "name": [{"text": "rt2 person"}],
            "link": [
                {"target": {"reference": f"Patient/{v['P3']}"}},
                {"target": {"reference": f"Patient/{v['P2']}"}},
            ],
        },
    )
    out["PERSON"] = person["id"] if person else ""
    related = await _post(
        base,
        {
            "resourceType": "RelatedPerson",
            "patient": {"reference": f"Patient/{v['P2']}"},
            "name": [{"text": "rt2 家属"}],
            "relationship": [{"text": "mother"}],
        },
    )
    out["RELATED"] = related["id"] if related else ""
    # The nurse may not see these: their ids are markers (round one's markers are mutated in place).
    hidden = {
        out[k] for k in ("EHIV", "CHIV", "KHIV", "DOCP2", "BINP2", "MEDIA", "IMAGING", "RELATED") if out[k]
    }
    for role in ("nurse", "nurse_psych"):
        world.markers[role][1].update(hidden)
    for role in ("physician",):
        world.markers[role][1].update(
            {out[k] for k in ("DOCP2", "BINP2", "MEDIA", "IMAGING", "RELATED") if out[k]}
        )
    world.v.update(out)
    return out


async def _get_json(base: str, path: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{base}/{path}", headers={"Accept": "application/fhir+json"}) as r,
    ):
        assert r.status == 200
        return dict(await r.json(content_type=None))


def _entries(answer: Answer) -> list[dict[str, Any]]:
    return [e for e in (answer.json() or {}).get("entry") or [] if isinstance(e, dict)]


def _page_shape(answer: Answer) -> Any:
    """What a page says besides ids: status, entry types and modes, link relations, total, outcomes."""
    body = answer.json() or {}
    return (
        answer.status,
        body.get("resourceType"),
        body.get("total"),
        sorted(lk.get("relation", "") for lk in body.get("link") or []),
        [
            ((e.get("search") or {}).get("mode"), (e.get("resource") or {}).get("resourceType"))
            for e in _entries(answer)
        ],
    )


async def _walk(gw: Gw, world: World, role: str, path: str, limit: int = 15) -> list[Answer]:
    pages = []
    for _ in range(limit):
        answer = await send(gw, world, role, path)
        assert_no_leak(world, gw, role, answer, f"walk {path[:80]}")
        assert_audited_disclosure(world, gw, answer, f"walk {path[:80]}")
        pages.append(answer)
        query = _next_query(answer)
        if not query or answer.status != 200:
            break
        path = f"?{query}"
    return pages


def _cursor_of(answer: Answer) -> str:
    return (_next_query(answer) or "").removeprefix("_cursor=")


async def _twin_compare(
    gw: Gw, world: World, role: str, template: str, a: str, b: str, walk: bool = True
) -> None:
    """The same search for the twin with a withheld record and the twin without: alike, page by page."""
    shapes, cursors = [], []
    for who in (a, b):
        path = template.replace("{T}", world.v[who])
        pages = await _walk(gw, world, role, path) if walk else [await send(gw, world, role, path)]
        if not walk:
            assert_no_leak(world, gw, role, pages[0], template)
            assert_audited_disclosure(world, gw, pages[0], template)
        shapes.append([_page_shape(p) for p in pages])
        cursors.append([len(_cursor_of(p)) for p in pages])
    assert shapes[0] == shapes[1], (
        f"ORACLE {template} [{role}] {world.kind}/{gw.engine}: twin with a withheld record vs without\n"
        f"  with:    {json.dumps(shapes[0], ensure_ascii=False)[:900]}\n"
        f"  without: {json.dumps(shapes[1], ensure_ascii=False)[:900]}"
    )
    assert cursors[0] == cursors[1], (
        f"ORACLE (cursor length) {template} [{role}] {world.kind}/{gw.engine}: {cursors[0]} vs {cursors[1]}"
    )


# --- 1. includes: what a withheld match pulls into a visible page ------------------------------------

INCLUDE_TWINS = {
    "include-encounter": "/Condition?patient={T}&_include=Condition:encounter",
    "include-star": "/Condition?patient={T}&_include=*",
    "include-encounter-count-1": "/Condition?patient={T}&_include=Condition:encounter&_count=1",
    "include-iterate": "/Condition?patient={T}&_include=Condition:encounter&_include:iterate=Encounter:subject",
    "include-sorted": "/Condition?patient={T}&_include=Condition:encounter&_sort=-recorded-date&_count=1",
    "revinclude-condition": "/Encounter?patient={T}&_revinclude=Condition:encounter",
    "revinclude-star": "/Encounter?patient={T}&_revinclude=*",
    "revinclude-iterate": (
        "/Encounter?patient={T}&_revinclude=Condition:encounter&_revinclude:iterate=Provenance:target"
    ),
    "patient-revinclude-condition": "/Patient?_id={T}&_revinclude=Condition:subject",
}


@pytest.mark.parametrize("name", list(INCLUDE_TWINS))
async def test_includes_of_a_withheld_match_do_not_shape_the_page(
    gw: Gw, world: World, more: dict[str, str], name: str
) -> None:
    await _twin_compare(gw, world, "nurse", INCLUDE_TWINS[name], "E", "F", walk=True)


INCLUDE_OTHERS = {
    "include-has-member": "/Observation?_id={PANEL}&_include=Observation:has-member",
    "include-star-panel": "/Observation?_id={PANEL}&_include=*",
    "include-focus": "/Observation?_id={FOCUS}&_include=Observation:focus",
    "include-evidence-star": "/Condition?_id={EVID}&_include=*",
    "revinclude-obs-patient": "/Patient?_id={P3}&_revinclude=Observation:subject&_count=200",
    "revinclude-group-member": "/Patient?_id={P3}&_revinclude=Group:member",
    "revinclude-person-link": "/Patient?_id={P3}&_revinclude=Person:link",
    "revinclude-provenance-iterate": (
        "/Condition?patient={X}&_revinclude=Provenance:target&_include:iterate=Provenance:target"
    ),
    "include-iterate-to-other-patient": (
        "/Observation?_id={PANEL}&_include=Observation:has-member&_include:iterate=Observation:subject"
    ),
    "revinclude-encounter-iterate-star": "/Encounter?patient={P3}&_revinclude=*&_include:iterate=*",
}


@pytest.mark.parametrize("name", list(INCLUDE_OTHERS))
async def test_includes_pull_in_nothing_withheld(
    gw: Gw, world: World, more: dict[str, str], name: str
) -> None:
    path = INCLUDE_OTHERS[name]
    if "{FOCUS}" in path and not more["FOCUS"] or "{EVID}" in path and not more["EVID"]:
        return  # this server refused to store the shape (a 4xx, asserted when written)
    answer = await send(gw, world, "nurse", path)
    assert answer.status in (200, 400), answer.text[:300]
    assert_no_leak(world, gw, "nurse", answer, name)
    assert_audited_disclosure(world, gw, answer, name)


# --- 2. sorted pages, cursors and the look-ahead ---------------------------------------------------

SORTED_TWINS = {
    "sort-recorded-count-9": ("/Condition?patient={T}&_sort=recorded-date&_count=9", "C", "D"),
    "sort-recorded-desc-count-3": ("/Condition?patient={T}&_sort=-recorded-date&_count=3", "C", "D"),
    "sort-lastupdated-count-4": ("/Condition?patient={T}&_sort=_lastUpdated&_count=4", "C", "D"),
    "sort-id-count-5": ("/Condition?patient={T}&_sort=_id&_count=5", "C", "D"),
    "sort-recorded-count-10": ("/Condition?patient={T}&_sort=recorded-date&_count=10", "C", "D"),
    "sort-total-accurate": ("/Condition?patient={T}&_sort=recorded-date&_count=9&_total=accurate", "C", "D"),
    "lookahead-search-count-1": ("/Condition?patient={T}&_sort=recorded-date&_count=1", "G", "H"),
    "lookahead-everything-count-1": ("/Patient/{T}/$everything?_count=1", "G", "H"),
    "lookahead-everything-count-2": ("/Patient/{T}/$everything?_count=2", "G", "H"),
    "everything-type-condition": ("/Patient/{T}/$everything?_type=Condition&_count=1", "G", "H"),
    "everything-since": ("/Patient/{T}/$everything?_since=2000-01-01T00:00:00Z&_count=1", "G", "H"),
    "compartment-count-1": ("/Patient/{T}/Condition?_count=1", "G", "H"),
}


@pytest.mark.parametrize("name", list(SORTED_TWINS))
async def test_pages_of_twins_look_alike(gw: Gw, world: World, more: dict[str, str], name: str) -> None:
    template, a, b = SORTED_TWINS[name]
    await _twin_compare(gw, world, "nurse", template, a, b, walk=True)


async def test_a_cursor_does_not_carry_a_withheld_count_in_its_length(
    gw: Gw, world: World, more: dict[str, str]
) -> None:
    """skip counts withheld matches too: an encrypted cursor's length must not tell it."""
    lengths = []
    for who in ("C", "D"):
        answer = await send(gw, world, "nurse", f"/Condition?patient={{{who}}}&_sort=recorded-date&_count=9")
        assert answer.status == 200, answer.text[:300]
        lengths.append(len(_cursor_of(answer)))
    assert lengths[0] == lengths[1], (
        f"ORACLE cursor length {world.kind}/{gw.engine}: with a withheld HIV record {lengths[0]}, without {lengths[1]}"
    )


async def test_type_history_with_count_one_discloses_nothing(
    gw: Gw, world: World, more: dict[str, str]
) -> None:
    pages = await _walk(gw, world, "nurse", "/Condition/_history?_count=1", limit=6)
    assert pages[0].status in (200, 400, 404), pages[0].text[:300]


async def test_system_history_since_discloses_nothing(gw: Gw, world: World, more: dict[str, str]) -> None:
    since = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    pages = await _walk(gw, world, "nurse", f"/_history?_since={since}&_count=5", limit=4)
    assert pages[0].status in (200, 400), pages[0].text[:300]


async def test_history_of_a_withheld_record_since_looks_missing(
    gw: Gw, world: World, more: dict[str, str]
) -> None:
    shapes = []
    nope = str(900000000 + uuid.uuid4().int % 99999999) if world.kind == "hapi" else str(uuid.uuid4())
    for rid in (world.v["HIV"], nope):
        answer = await send(gw, world, "nurse", f"/Condition/{rid}/_history?_since=2000-01-01&_count=1")
        assert_no_leak(world, gw, "nurse", answer, "instance-history-since")
        shapes.append(json.dumps(shape(answer)).replace(rid, "<V>"))
    assert shapes[0] == shapes[1], shapes


# --- 3. _id lists and _lastUpdated ranges ----------------------------------------------------------


async def _pair(gw: Gw, world: World, role: str, template: str, withheld: str, missing: str) -> None:
    shapes = []
    for value in (withheld, missing):
        answer = await send(gw, world, role, template.replace("{V}", value))
        assert_no_leak(world, gw, role, answer, template)
        assert_audited_disclosure(world, gw, answer, template)
        shapes.append(json.dumps(_page_shape(answer), ensure_ascii=False).replace(value, "<V>"))
    assert shapes[0] == shapes[1], (
        f"ORACLE {template} [{role}] {world.kind}/{gw.engine}:\n  withheld {shapes[0][:600]}\n  missing  {shapes[1][:600]}"
    )


def _nope(world: World) -> str:
    return str(900000000 + uuid.uuid4().int % 99999999) if world.kind == "hapi" else str(uuid.uuid4())


ID_LISTS = {
    "id-list-count-1": "/Condition?_id={P3COND},{V}&_count=1",
    "id-list-total": "/Condition?_id={P3COND},{V}&_total=accurate",
    "id-list-count-0": "/Condition?_id={P3COND},{V}&_count=0",
    "id-list-summary-count": "/Condition?_id={P3COND},{V}&_summary=count",
    "id-list-sort": "/Condition?_id={V},{P3COND}&_sort=-_lastUpdated&_count=1",
    "id-list-include": "/Condition?_id={P3COND},{V}&_include=Condition:subject",
    "system-id-list": "?_id={P3COND},{V}&_type=Condition,Patient&_count=1",
}


@pytest.mark.parametrize("name", list(ID_LISTS))
async def test_an_id_list_mixing_visible_and_withheld(
    gw: Gw, world: World, more: dict[str, str], name: str
) -> None:
    if "P3COND" not in world.v:
        found = await _get_json(world.base, f"Condition?subject=Patient/{world.v['P3']}&_count=1")
        world.v["P3COND"] = found["entry"][0]["resource"]["id"]
    await _pair(gw, world, "nurse", ID_LISTS[name], world.v["HIV"], _nope(world))


LASTUPDATED = {
    "lastupdated-ge-2000": "/Condition?_id={V}&_lastUpdated=ge2000-01-01&_count=0",
    "lastupdated-lt-2999-total": "/Condition?_id={V}&_lastUpdated=lt2999-01-01&_total=accurate",
    "lastupdated-range-summary-count": (
        "/Condition?_id={V}&_lastUpdated=ge2000-01-01&_lastUpdated=le2999-01-01&_summary=count"
    ),
    "lastupdated-patient-count-1": "/Condition?patient={V}&_lastUpdated=ge2000-01-01&_count=1",
}


@pytest.mark.parametrize("name", list(LASTUPDATED))
async def test_lastupdated_ranges_find_no_withheld_record(
    gw: Gw, world: World, more: dict[str, str], name: str
) -> None:
    template = LASTUPDATED[name]
    if "patient=" in template:  # X has only HIV; Y nothing
        await _pair(gw, world, "nurse", template, world.v["X"], world.v["Y"])
    else:
        await _pair(gw, world, "nurse", template, world.v["HIV"], _nope(world))


async def test_lastupdated_binary_search_of_the_twins(gw: Gw, world: World, more: dict[str, str]) -> None:
    """E's HIV record is the newest of E's conditions: windows after F's last look alike."""
    after = await _get_json(world.base, f"Condition/{more['EHIV']}")
    stamp = after["meta"]["lastUpdated"][:19]
    await _twin_compare(
        gw, world, "nurse", f"/Condition?patient={{T}}&_lastUpdated=ge{stamp}&_count=1", "E", "F", walk=True
    )


# --- 4. methods, formats, subsets -------------------------------------------------------------------


async def test_head_of_a_search_discloses_nothing(gw: Gw, world: World, more: dict[str, str]) -> None:
    shapes = []
    for who in ("X", "Y"):
        answer = await send(gw, world, "nurse", f"/Condition?patient={{{who}}}&_count=1", method="HEAD")
        assert_no_leak(world, gw, "nurse", answer, "head-search")
        shapes.append((answer.status, answer.headers.get("Content-Length"), answer.headers.get("ETag")))
    assert shapes[0] == shapes[1], f"ORACLE HEAD search {world.kind}/{gw.engine}: {shapes}"


async def test_head_of_a_withheld_read_looks_missing(gw: Gw, world: World, more: dict[str, str]) -> None:
    shapes = []
    for rid in (world.v["HIV"], _nope(world)):
        answer = await send(gw, world, "nurse", f"/Condition/{rid}", method="HEAD")
        assert_no_leak(world, gw, "nurse", answer, "head-read")
        # The body (if any) may echo the id: its length is compared without it.
        length = int(answer.headers.get("Content-Length") or 0) - answer.text.count(rid) * len(rid)
        shapes.append(
            (answer.status, rules_text(answer), "ETag" in answer.headers, length if answer.text else 0)
        )
    assert shapes[0] == shapes[1], f"ORACLE HEAD read {world.kind}/{gw.engine}: {shapes}"


@pytest.mark.parametrize(
    "path", ["/Condition/{HIV}", "/metadata", "/Patient/{P2}", "/Condition?patient={P7}"]
)
async def test_options_discloses_nothing(gw: Gw, world: World, path: str) -> None:
    answer = await send(gw, world, "nurse", path, method="OPTIONS")
    assert_no_leak(world, gw, "nurse", answer, f"OPTIONS {path}")
    assert answer.status != 200 or "B20" not in answer.text


FORMATS = {
    "format-json": ("/Condition/{HIV}?_format=json", {}),
    "format-xml": ("/Condition?patient={X}&_format=xml", {}),
    "format-html": ("/Condition?patient={X}&_format=text/html", {}),
    "accept-xml-star": ("/Condition?patient={X}", {"Accept": "application/fhir+xml, */*;q=0.1"}),
    "accept-turtle": ("/Condition?patient={X}", {"Accept": "text/turtle, application/*;q=0.1"}),
    "format-json-pretty": ("/Condition?patient={X}&_format=application/fhir%2Bjson&_pretty=true", {}),
    "format-in-post-search": ("/Condition/_search", {}),
}


@pytest.mark.parametrize("name", list(FORMATS))
async def test_formats_never_carry_withheld_content(gw: Gw, world: World, name: str) -> None:
    path, headers = FORMATS[name]
    if name == "format-in-post-search":
        answer = await send(
            gw,
            world,
            "nurse",
            path,
            method="POST",
            body="patient={X}&_format=xml",
            content_type="application/x-www-form-urlencoded",
        )
    else:
        answer = await send(gw, world, "nurse", path, headers=headers)
    assert_no_leak(world, gw, "nurse", answer, name)
    assert_audited_disclosure(world, gw, answer, name)
    if answer.status == 200:
        assert answer.text.lstrip().startswith("{"), f"{name}: not JSON: {answer.text[:200]}"


SUBSETS = {
    "elements-code-hiv": ("nurse", "/Condition?patient={P7}&_elements=code,subject"),
    "elements-id-hiv-id": ("nurse", "/Condition?_id={HIV}&_elements=id"),
    "summary-true-hiv-patient": ("nurse", "/Condition?patient={P7}&_summary=true"),
    "summary-text-hiv-read": ("nurse", "/Condition/{HIV}?_summary=text"),
    "summary-data-include": ("nurse", "/Condition?patient={E}&_include=Condition:encounter&_summary=data"),
    "research-elements-subject": ("researcher", "/Condition?_count=20&_elements=subject,encounter,evidence"),
    "research-elements-id": ("researcher", "/Patient?_count=10&_elements=id"),
    "research-summary-true-patient": ("researcher", "/Patient?_count=10&_summary=true"),
    "research-summary-text": ("researcher", "/Encounter?_count=10&_summary=text"),
    "research-elements-include": (
        "researcher",
        "/Condition?_count=5&_include=Condition:subject&_elements=id",
    ),
    "research-everything-elements": ("researcher", "/Observation?_count=10&_elements=meta,identifier"),
}


@pytest.mark.parametrize("name", list(SUBSETS))
async def test_subsets_keep_no_withheld_or_real_id(
    gw: Gw, world: World, more: dict[str, str], name: str
) -> None:
    role, path = SUBSETS[name]
    answer = await send(gw, world, role, path)
    assert_no_leak(world, gw, role, answer, name)
    assert_audited_disclosure(world, gw, answer, name)
    body = answer.json() or {}
    # A SUBSETTED tag only on released matches, never on an outcome nor telling of a dropped entry.
    for e in body.get("entry") or []:
        res = e.get("resource") or {}
        if res.get("resourceType") == "OperationOutcome":
            assert "SUBSETTED" not in json.dumps(res), res


async def test_subset_twins_look_alike(gw: Gw, world: World, more: dict[str, str]) -> None:
    await _twin_compare(gw, world, "nurse", "/Condition?patient={T}&_elements=code&_count=1", "E", "F")


# --- 5. writes: Prefer, refusals, conditional create ----------------------------------------------


def _obs(patient: str, text: str = "rt2 note") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{patient}"},
    }


@pytest.mark.parametrize("prefer", ["return=minimal", "return=OperationOutcome", "return=representation"])
async def test_prefer_on_a_write_into_a_withheld_chart(gw: Gw, world: World, prefer: str) -> None:
    shapes = []
    for who in ("P2", "NOPE"):
        pid = world.v[who] if who == "P2" else _nope(world)
        answer = await send(
            gw, world, "nurse", "/Observation", method="POST", body=_obs(pid), headers={"Prefer": prefer}
        )
        assert_no_leak(world, gw, "nurse", answer, f"create-withheld {prefer}")
        assert answer.status in (400, 403, 404), (answer.status, answer.text[:300])
        shapes.append(json.dumps(shape(answer)).replace(pid, "<V>"))
    assert shapes[0] == shapes[1], f"ORACLE create into P2 vs missing patient {prefer}: {shapes}"


@pytest.mark.parametrize("prefer", ["return=minimal", "return=OperationOutcome", "return=representation"])
async def test_prefer_on_an_own_write_discloses_and_records(gw: Gw, world: World, prefer: str) -> None:
    answer = await send(
        gw,
        world,
        "nurse",
        "/Observation",
        method="POST",
        body=_obs(world.v["P3"]),
        headers={"Prefer": prefer},
    )
    assert answer.status in (200, 201), answer.text[:300]
    assert_no_leak(world, gw, "nurse", answer, f"create-own {prefer}")
    assert_audited_disclosure(world, gw, answer, f"create-own {prefer}")
    assert f"Patient/{world.v['P3']}" in (answer.record.get("patients_targeted") or []), answer.record


async def test_prefer_on_an_update_of_a_withheld_record(gw: Gw, world: World, more: dict[str, str]) -> None:
    shapes = []
    for rid in (world.v["HIV"], _nope(world)):
        body = {**_condition(world.v["P7"], I10_CODE), "id": rid}
        answer = await send(
            gw,
            world,
            "nurse",
            f"/Condition/{rid}",
            method="PUT",
            body=body,
            headers={"Prefer": "return=OperationOutcome"},
        )
        assert_no_leak(world, gw, "nurse", answer, "put-prefer-outcome")
        shapes.append(json.dumps(shape(answer)).replace(rid, "<V>"))
    assert shapes[0] == shapes[1], f"ORACLE PUT withheld vs missing {world.kind}/{gw.engine}: {shapes}"


CONDITIONAL = {
    "by-identifier": "identifier={S}|{V}",
    "by-id": "_id={V}",
}


@pytest.mark.parametrize("name", list(CONDITIONAL))
async def test_conditional_create_does_not_confirm_a_withheld_match(
    gw: Gw, world: World, more: dict[str, str], name: str
) -> None:
    results = []
    for value in (
        "RT2-HIV-K" if name == "by-identifier" else more["KHIV"],
        f"RT2-NONE-{uuid.uuid4().hex[:8]}",
    ):
        if name == "by-id" and value.startswith("RT2-NONE"):
            value = _nope(world)
        cond = _condition(more["K"], I10_CODE, "2026-05-05")
        inx = CONDITIONAL[name].replace("{S}", HIV_IDENT_SYSTEM).replace("{V}", value)
        answer = await send(
            gw,
            world,
            "nurse",
            "/Condition",
            method="POST",
            body=cond,
            headers={"If-None-Exist": inx, "Prefer": "return=representation"},
        )
        assert_no_leak(world, gw, "nurse", answer, f"conditional-create {name}")
        results.append((answer.status, rules_text(answer)))
    # A hidden match must not be confirmed by the status (200 vs 201) or the refusal.
    assert results[0] == results[1] or all(s >= 400 for s, _ in results) and results[0][1] == results[1][1], (
        f"ORACLE conditional create {name} {world.kind}/{gw.engine}: withheld match {results[0]} vs none {results[1]}"
    )


def rules_text(answer: Answer) -> list[str]:
    body = answer.json() or {}
    if body.get("resourceType") != "OperationOutcome":
        return [str(body.get("resourceType"))]
    return sorted(
        c.get("code", "")
        for i in body.get("issue") or []
        for c in (i.get("details") or {}).get("coding") or []
    )


async def test_conditional_create_in_a_batch_does_not_confirm(
    gw: Gw, world: World, more: dict[str, str]
) -> None:
    results = []
    for value in ("RT2-HIV-K", f"RT2-NONE-{uuid.uuid4().hex[:8]}"):
        body = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": _condition(more["K"], I10_CODE, "2026-05-06"),
                    "request": {
                        "method": "POST",
                        "url": "Condition",
                        "ifNoneExist": f"identifier={HIV_IDENT_SYSTEM}|{value}",
                    },
                }
            ],
        }
        answer = await send(gw, world, "nurse", "", method="POST", body=body)
        assert_no_leak(world, gw, "nurse", answer, "batch-conditional-create")
        entry = (_entries(answer) or [{}])[0]
        status = str((entry.get("response") or {}).get("status", ""))[:3]
        results.append((answer.status, status))
    assert results[0] == results[1] or all(s[1] >= "400" for s in results), (
        f"ORACLE batch conditional create {world.kind}/{gw.engine}: {results}"
    )


# --- 6. stored Bundles, attachments, Binary, media, groups and people --------------------------------

READS = {
    "bundle-message": ("nurse", "/Bundle/{BUNDLEMESSAGE}", "BUNDLEMESSAGE"),
    "bundle-transaction": ("nurse", "/Bundle/{BUNDLETRANSACTION}", "BUNDLETRANSACTION"),
    "bundle-collection": ("nurse", "/Bundle/{BUNDLECOLLECTION}", "BUNDLECOLLECTION"),
    "bundle-search-type-message": ("nurse", "/Bundle?type=message&_count=50", "BUNDLEMESSAGE"),
    "bundle-search-all": ("physician", "/Bundle?_count=100", ""),
    "bundle-message-researcher": ("researcher", "/Bundle/{BUNDLEMESSAGE}", "BUNDLEMESSAGE"),
    "docref-no-subject": ("nurse", "/DocumentReference/{DOCNOSUBJ}", "DOCNOSUBJ"),
    "docref-p2": ("nurse", "/DocumentReference/{DOCP2}", "DOCP2"),
    "docref-search": ("nurse", "/DocumentReference?_count=100", ""),
    "binary-no-context": ("nurse", "/Binary/{BINNOCTX}", "BINNOCTX"),
    "binary-p2": ("nurse", "/Binary/{BINP2}", "BINP2"),
    "binary-p2-physician": ("physician", "/Binary/{BINP2}", "BINP2"),
    "media-p2": ("nurse", "/Media/{MEDIA}", "MEDIA"),
    "media-search": ("nurse", "/Media?_count=50", ""),
    "imaging-p2": ("nurse", "/ImagingStudy/{IMAGING}", "IMAGING"),
    "imaging-search": ("physician", "/ImagingStudy?_count=50", ""),
    "group-read": ("nurse", "/Group/{GROUP}", "GROUP"),
    "group-search-member": ("nurse", "/Group?member={P2}", "GROUP"),
    "group-search": ("nurse", "/Group?_count=50", "GROUP"),
    "person-read": ("nurse", "/Person/{PERSON}", "PERSON"),
    "person-search": ("nurse", "/Person?_count=50", "PERSON"),
    "person-search-link": ("nurse", "/Person?link=Patient/{P3}", "PERSON"),
    "related-read": ("nurse", "/RelatedPerson/{RELATED}", "RELATED"),
    "related-search": ("nurse", "/RelatedPerson?_count=50", "RELATED"),
    "group-researcher": ("researcher", "/Group/{GROUP}", "GROUP"),
    "person-researcher": ("researcher", "/Person?_count=20", "PERSON"),
    "binary-researcher": ("researcher", "/Binary/{BINP2}", "BINP2"),
}


def _decoded(answer: Answer) -> str:
    """Base64 payloads (attachment.data, Binary.data) decoded: their text is content too."""
    out = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, val in node.items():
                if k == "data" and isinstance(val, str):
                    try:
                        out.append(base64.b64decode(val).decode("utf-8", "replace"))
                    except ValueError:
                        pass
                walk(val)
        elif isinstance(node, list):
            for val in node:
                walk(val)

    walk(answer.json())
    return "\n".join(out)


@pytest.mark.parametrize("name", list(READS))
async def test_stored_documents_and_people_disclose_nothing_withheld(
    gw: Gw, world: World, more: dict[str, str], name: str
) -> None:
    role, path, needs = READS[name]
    if needs and not more.get(needs):
        return  # this server refused to store the shape (a 4xx, asserted when written): nothing of it exists
    answer = await send(gw, world, role, path)
    assert_no_leak(world, gw, role, answer, name)
    assert_audited_disclosure(world, gw, answer, name)
    decoded = _decoded(answer)
    texts, _ = world.markers[role]
    found = {t for t in texts if len(t) >= 3 and t in decoded}
    assert not found, (
        f"LEAK (base64) {name} [{role}] {world.kind}/{gw.engine}: {sorted(found)} in {decoded[:200]}"
    )
    if role == "researcher":
        assert "Patient/" + world.v["P2"] not in answer.text and world.v["P2"] not in shown(answer)


async def test_a_withheld_binary_looks_missing(gw: Gw, world: World, more: dict[str, str]) -> None:
    if not more["BINP2"]:
        return  # this server refused to store the Binary (a 4xx, asserted when written)
    shapes = []
    for rid in (more["BINP2"], _nope(world)):
        answer = await send(gw, world, "nurse", f"/Binary/{rid}", headers={"Accept": "application/fhir+json"})
        shapes.append(json.dumps(shape(answer)).replace(rid, "<V>"))
    assert shapes[0] == shapes[1], shapes


async def test_binary_raw_accept_discloses_nothing(gw: Gw, world: World, more: dict[str, str]) -> None:
    if not more["BINNOCTX"]:
        return  # this server refused to store the Binary (a 4xx, asserted when written)
    answer = await send(gw, world, "nurse", "/Binary/{BINNOCTX}", headers={"Accept": "text/plain, */*;q=0.1"})
    assert_no_leak(world, gw, "nurse", answer, "binary raw")
    decoded = _decoded(answer)
    assert world.v["P2MRN"] not in decoded + answer.text, decoded[:200]


# --- 7. pseudonyms across researchers and studies -------------------------------------------------


async def _researcher_token(gw: Gw, idp: Any, sub: str, agreement: str | None) -> str:
    name = f"researcher-{sub}"
    if name not in gw.tokens:
        if agreement:
            now = datetime.now(UTC)
            body = {
                "operator": sub,
                "start": (now - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
                "end": (now + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
                "scope": {},
                "kind": "export",
                "purposes": ["HRESCH"],
                "agreement": agreement,
            }
            officer = idp.token("records_officer", sub="rt2-records")
            resp = await gw.client.post(
                "/admin/grants", json=body, headers={"Authorization": f"Bearer {officer}"}
            )
            assert resp.status == 201, await resp.text()
            gw.records()
        gw.tokens[name] = idp.token(roles="researcher", sub=sub)
        ROLES.setdefault(name, ({"roles": "researcher", "sub": sub}, "HRESCH"))
    return name


async def test_a_pseudonym_of_another_study_names_nothing(
    gw: Gw, world: World, more: dict[str, str], idp: Any
) -> None:
    a = await _researcher_token(gw, idp, "rt2-res-a", "RT2-STUDY-1")
    b = await _researcher_token(gw, idp, "rt2-res-b", "RT2-STUDY-1")
    c = await _researcher_token(gw, idp, "rt2-res-c", "RT2-STUDY-2")
    for role in (a, b, c):
        world.markers.setdefault(role, world.markers["researcher"])
    first = await send(gw, world, a, "/Condition?_count=3")
    assert first.status == 200, first.text[:300]
    assert_no_leak(world, gw, a, first, "research-a")
    cond = next(
        e["resource"] for e in _entries(first) if e.get("resource", {}).get("resourceType") == "Condition"
    )
    ps_cond = cond["id"]
    ps_pat = cond["subject"]["reference"].split("/", 1)[1]
    # Same study: the same records (pseudonyms link within a study, by design).
    same = await send(gw, world, b, f"/Condition/{ps_cond}")
    assert_no_leak(world, gw, b, same, "research-same-study")
    # Another study: as if made up, for the record and for the patient.
    forged = "ps-" + uuid.uuid4().hex
    for ps, kind in ((ps_cond, "Condition"), (ps_pat, "Patient")):
        shapes = []
        for value in (ps, forged):
            answer = await send(gw, world, c, f"/{kind}/{value}")
            assert_no_leak(world, gw, c, answer, f"research-other-study {kind}")
            assert answer.status >= 400, f"LINK another study's pseudonym opened {kind}: {answer.text[:300]}"
            shapes.append(json.dumps(shape(answer)).replace(value, "<V>"))
        assert shapes[0] == shapes[1], f"ORACLE other study's {kind} pseudonym vs a forged one: {shapes}"
        answer = await send(gw, world, c, f"/Condition?patient={ps_pat}")
        assert answer.status >= 400 or not _entries(answer), answer.text[:300]


async def test_research_headers_hold_no_real_id(gw: Gw, world: World, more: dict[str, str]) -> None:
    first = await send(gw, world, "researcher", "/Condition?_count=2")
    cond = next(
        e["resource"] for e in _entries(first) if e.get("resource", {}).get("resourceType") == "Condition"
    )
    for path, method in (
        (f"/Condition/{cond['id']}", "GET"),
        (f"/Condition/{cond['id']}", "HEAD"),
        (f"/Condition/{cond['id']}/_history", "GET"),
        ("/Condition?_count=2&_include=Condition:subject&_include=Condition:encounter", "GET"),
        (f"/{cond['subject']['reference']}/$everything?_count=3", "GET"),
    ):
        answer = await send(gw, world, "researcher", path, method=method)
        assert_no_leak(world, gw, "researcher", answer, f"research-headers {method} {path}")
        for k, val in answer.headers.items():
            if k.lower() in ("etag", "location", "content-location", "link", "last-modified"):
                for real in world.markers["researcher"][1]:
                    assert not real or real not in val, f"LEAK header {k}: {val}"


async def test_research_write_answer_holds_no_real_id(gw: Gw, world: World, more: dict[str, str]) -> None:
    first = await send(gw, world, "researcher", "/Patient?_count=1")
    pat = next(
        e["resource"]["id"] for e in _entries(first) if e.get("resource", {}).get("resourceType") == "Patient"
    )
    answer = await send(
        gw,
        world,
        "researcher",
        "/Observation",
        method="POST",
        body=_obs(pat),
        headers={"Prefer": "return=representation"},
    )
    assert_no_leak(world, gw, "researcher", answer, "research-write")


# --- 8. the audit record: one per request, every patient released ---------------------------------


async def test_include_page_records_every_included_patient(
    gw: Gw, world: World, more: dict[str, str]
) -> None:
    answer = await send(
        gw,
        world,
        "physician",
        "/Condition?patient={P7}&_include=Condition:subject&_include=Condition:encounter",
    )
    assert answer.status == 200, answer.text[:300]
    assert_audited_disclosure(world, gw, answer, "include-audit")
    assert f"Patient/{world.v['P7']}" in answer.record["patients_disclosed"], answer.record


async def test_revinclude_across_patients_records_them(gw: Gw, world: World, more: dict[str, str]) -> None:
    answer = await send(
        gw, world, "physician", "/Patient?_id={P3},{P7}&_revinclude=Condition:subject&_count=1"
    )
    assert_no_leak(world, gw, "physician", answer, "revinclude-two")
    disclosed = set(answer.record.get("patients_disclosed") or [])
    released = {p for p in patients_in_body(answer.json()) if not p.startswith("Patient/ps-")}
    assert released <= disclosed, (released, disclosed)
    # Read-ahead entries are not disclosed, so are not recorded; the converse must hold too.
    assert disclosed <= released | {f"Patient/{world.v['P3']}", f"Patient/{world.v['P7']}"}, disclosed


async def test_everything_pages_record_every_patient(gw: Gw, world: World, more: dict[str, str]) -> None:
    for page in await _walk(gw, world, "physician", "/Patient/{P7}/$everything?_count=3", limit=8):
        assert_audited_disclosure(world, gw, page, "everything-pages")
        if _entries(page):
            assert page.record.get("patients_disclosed"), page.record


async def test_research_record_is_real_and_answer_is_not(gw: Gw, world: World, more: dict[str, str]) -> None:
    answer = await send(gw, world, "researcher", "/Condition?_count=3&_include=Condition:subject")
    assert_no_leak(world, gw, "researcher", answer, "research-include")
    disclosed = answer.record.get("patients_disclosed") or []
    assert all(not p.startswith("Patient/ps-") for p in disclosed), disclosed
    if _entries(answer):
        assert disclosed, answer.record


REF_KEYS = [
    "REFOBSENC",
    "REFCONDENC",
    "REFENCPARTOF",
    "REFSTAGE",
    "REFEVIDHIV",
    "REFCOMPLICATION",
    "REFSUPPORTING",
    "REFDRENC",
    "REFCOMMPARTOF",
]
REF_TYPES = {
    "REFOBSENC": "Observation",
    "REFCONDENC": "Condition",
    "REFENCPARTOF": "Encounter",
    "REFSTAGE": "Condition",
    "REFEVIDHIV": "Condition",
    "REFCOMPLICATION": "Procedure",
    "REFSUPPORTING": "ServiceRequest",
    "REFDRENC": "DiagnosticReport",
    "REFCOMMPARTOF": "Communication",
}


@pytest.mark.parametrize("key", REF_KEYS)
async def test_a_visible_record_names_no_withheld_record(
    gw: Gw, world: World, more: dict[str, str], key: str
) -> None:
    if not more.get(key):
        return  # this server refused to store the shape (a 4xx, asserted when written): nothing of it exists
    for path in (f"/{REF_TYPES[key]}/{more[key]}", f"/{REF_TYPES[key]}?_id={more[key]}"):
        answer = await send(gw, world, "nurse", path)
        assert_no_leak(world, gw, "nurse", answer, f"ref {key} {path}")
        assert_audited_disclosure(world, gw, answer, f"ref {key}")


# --- known open (issue 13, closing note): a visible record keeps the ids of the records it refers
# to, even when the operator may not see them (`Condition.evidence.detail`, `Observation.encounter`,
# `partOf`, `stage.assessment` …: only "about" elements, gateway/fhir/about.py, are judged with their
# targets; the displays of such references are dropped). An `_include` that follows such a reference
# differs by twin for the same reason. Not strict: some cases already hold on one upstream.
OPEN_REFERENCE_IDS = (
    "open leak class: a visible record names the id of a withheld record it refers to outside the "
    "'about' elements (display dropped, id kept) — issue 13 closing note"
)
for _name in (
    "test_a_visible_record_names_no_withheld_record",
    "test_includes_pull_in_nothing_withheld",
    "test_includes_of_a_withheld_match_do_not_shape_the_page",
    "test_type_history_with_count_one_discloses_nothing",
    "test_system_history_since_discloses_nothing",
    "test_revinclude_across_patients_records_them",
):
    globals()[_name] = pytest.mark.xfail(reason=OPEN_REFERENCE_IDS, strict=False)(globals()[_name])
