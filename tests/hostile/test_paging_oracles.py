"""Paging oracles (issue "nothing leaks", class 4): a page's shape must not tell that withheld
matches exist. Before the gateway built its own pages, ``Condition?patient=x&_count=1`` answered
an empty page with a `next` link (or one entry and a `next` link) when the patient had an HIV
diagnosis the nurse may not see, and one entry without `next` when not. Now a patient with a
withheld record and one without get answers of the same shape; `next` appears only when the
gateway has seen a further visible match; the audit names only what was released (I.4, II.2).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

import gateway.pages
from gateway.app import create_app
from tests.conftest import auth, read_audit
from tests.hostile.conftest import stored

pytestmark = pytest.mark.integration
HIV = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "B20"}]}
HYPERTENSION = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}]}


def condition(patient: str, code: dict[str, Any], day: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": patient}, "code": code, "recordedDate": day}


def shape(body: dict[str, Any]) -> dict[str, Any]:
    """What a page says besides its entries' content."""
    return {
        "entries": len(
            [e for e in body.get("entry") or [] if (e.get("search") or {}).get("mode") != "outcome"]
        ),
        "links": sorted(link["relation"] for link in body.get("link") or []),
        "total": body.get("total"),
        "has_entry_key": "entry" in body,
    }


async def page(client: Any, path: str, token: str) -> dict[str, Any]:
    resp = await client.get(path, headers=auth(token, "TREAT"))
    body = await resp.json(content_type=None)
    assert resp.status == 200, body
    assert read_audit(client.settings)[-1]["request_id"] == resp.headers["X-Request-Id"]
    return body


def names(body: object, rid: str) -> bool:
    """Whether an id appears as a whole token (HAPI's ids are short numbers a watermark's hex may hold)."""
    return (
        re.search(r"(?<![0-9A-Za-z\-])" + re.escape(rid) + r"(?![0-9A-Za-z\-])", json.dumps(body)) is not None
    )


def rel(link: str) -> str:
    return "/fhir" + link.split("/fhir", 1)[1]


def cardiology(fhir_server: Any, n: int) -> list[str]:
    found = [p for p, d in fhir_server.departments.items() if d == "cardiology"][:n]
    assert len(found) == n, "the synthetic data has cardiology patients"
    return found


async def test_a_withheld_match_does_not_change_the_shape_of_the_page(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    with_hiv, without = cardiology(fhir_server, 2)
    day = f"2011-0{uuid.uuid4().int % 9 + 1}-{uuid.uuid4().int % 27 + 1:02d}"
    seen = await stored(fhir_server, condition(with_hiv, HYPERTENSION, day))
    hidden = await stored(fhir_server, condition(with_hiv, HIV, day))
    await stored(fhir_server, condition(without, HYPERTENSION, day))
    nurse = idp.token("nurse", sub="n-paging", dept="cardiology")  # HIV is grade 5: withheld from her
    for extra in ("", "&_sort=recorded-date", "&_sort=-_lastUpdated", "&_total=accurate"):
        shapes = []
        for patient in (with_hiv, without):
            body = await page(
                client, f"/fhir/Condition?patient={patient}&recorded-date={day}&_count=1{extra}", nurse
            )
            assert not names(body, hidden["id"])
            shapes.append(shape(body))
        assert shapes[0] == shapes[1], (extra, shapes)
        assert shapes[0]["entries"] == 1 and "next" not in shapes[0]["links"], (extra, shapes)
    # The record of the page names what was released, and the read-ahead HIV record is not in it.
    record = read_audit(client.settings)[-2]
    assert seen["id"] in json.dumps(record["resources_disclosed"])
    assert not names(record["resources_disclosed"], hidden["id"])


async def test_next_appears_only_for_a_further_visible_match_and_pages_continue_where_they_stopped(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    (patient,) = cardiology(fhir_server, 1)
    day = "2012-02-0" + str(uuid.uuid4().int % 9 + 1)
    first = await stored(fhir_server, condition(patient, HYPERTENSION, day))
    hidden = [await stored(fhir_server, condition(patient, HIV, day)) for _ in range(2)]
    second = await stored(fhir_server, condition(patient, HYPERTENSION, day))
    nurse = idp.token("nurse", sub="n-paging-2", dept="cardiology")
    body = await page(
        client, f"/fhir/Condition?patient={patient}&recorded-date={day}&_count=1&_sort=_lastUpdated", nurse
    )
    links = {link["relation"]: link["url"] for link in body["link"]}
    assert [e["resource"]["id"] for e in body["entry"]] == [first["id"]] and "next" in links
    released = read_audit(client.settings)[-1]["resources_disclosed"]
    assert not names(released, second["id"]), "read ahead, not released"
    body = await page(client, rel(links["next"]), nurse)
    ids = [e["resource"]["id"] for e in body.get("entry") or []]
    assert ids == [second["id"]], ids
    assert "next" not in {link["relation"] for link in body["link"]}
    assert not any(names(body, h["id"]) for h in hidden)
    # A physician of the department sees all four, one per page, and the last page has no `next`.
    doctor = idp.token("physician", sub="dr-paging", dept="cardiology")
    path, seen = f"/fhir/Condition?patient={patient}&recorded-date={day}&_count=1&_sort=_lastUpdated", []
    for _ in range(6):
        body = await page(client, path, doctor)
        seen += [e["resource"]["id"] for e in body.get("entry") or []]
        links = {link["relation"]: link["url"] for link in body["link"]}
        if "next" not in links:
            break
        path = rel(links["next"])
    assert seen == [first["id"], hidden[0]["id"], hidden[1]["id"], second["id"]]


async def test_the_look_ahead_is_bounded_and_says_so(
    aiohttp_client: Any, make_settings: Any, idp: Any, fhir_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With upstream pages of two entries (the page and one more) and a bound of two pages, four withheld matches in a row
    end the page: no `next` (unconfirmed), an informational outcome, and the record says so."""
    monkeypatch.setattr(gateway.pages, "MIN_UPSTREAM_PAGE", 1)
    settings = make_settings(fhir_server.base, paging_lookahead_pages=2)
    client = await aiohttp_client(create_app(settings))
    client.settings = settings
    (patient,) = cardiology(fhir_server, 1)
    day = "2013-03-0" + str(uuid.uuid4().int % 9 + 1)
    for _ in range(4):
        await stored(fhir_server, condition(patient, HIV, day))
    late = await stored(fhir_server, condition(patient, HYPERTENSION, day))
    nurse = idp.token("nurse", sub="n-paging-3", dept="cardiology")
    body = await page(
        client, f"/fhir/Condition?patient={patient}&recorded-date={day}&_count=1&_sort=_lastUpdated", nurse
    )
    assert not names(body, late["id"])
    assert "next" not in {link["relation"] for link in body["link"]}
    outcomes = [e for e in body.get("entry") or [] if (e.get("search") or {}).get("mode") == "outcome"]
    assert outcomes and "emr.paging.lookahead" in json.dumps(outcomes)
    assert read_audit(settings)[-1]["extra"].get("paging_gave_up") is True
