"""Digital watermarks (II.2 支持通过数字水印等技术手段,确保使用过程留痕): the codec on its own, then
the whole path — a record read through the gateway, saved, re-serialised and pasted, traced back to
its disclosure by ``emrguard watermark decode`` — against the real FHIR dev server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from gateway.app import create_app
from gateway.cli import main
from gateway.fhir.resources import collect
from plugins.care.hook import DEPARTMENT_SYSTEM
from plugins.watermark.codec import (
    END,
    HEADER,
    ONE,
    START,
    TAG_SYSTEM,
    ZERO,
    Codec,
    insert_mark,
    mark_resource,
    parse_fields,
    remove_marks,
    visible,
)
from plugins.watermark.decode import decode, scan
from tests.conftest import ROOT, auth

SECRET = "test-watermark-secret-0123456789-abcdef"
PLUGINS = ("purpose", "break_glass", "grants", "patient_context", "seal", "watermark")
NOTE = "患者诉胸闷两天,心率 72 次/分,无发热。Follow up in 2 weeks."
DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>心率 <b>72</b> 次/分</p></div>'
FIELDS = parse_fields(("text.div", "note.text", "valueString", "description", "conclusion"))


def flip_bit(text: str, n: int = 40) -> str:
    """Flip the n-th bit character of the first mark in text (zero <-> one)."""
    at = text.index(START) + 1 + n
    return text[:at] + (ONE if text[at] == ZERO else ZERO) + text[at + 1 :]


# --- the codec ---------------------------------------------------------------------------------------


def test_round_trip_is_invisible_compact_and_keyed() -> None:
    codec, rid = Codec(SECRET), uuid.uuid4().hex
    mark = codec.encode(rid)
    assert set(mark) <= {ZERO, ONE, START, END} and mark[0] == START and mark[-1] == END
    assert len(mark) == 1 + 128 + 64 + 1  # raw 128-bit id, 64-bit MAC, two frame characters
    [found] = codec.find("stable" + mark)
    assert (found.status, found.disclosure_id) == ("valid", rid)
    assert Codec(SECRET + "x").find("stable" + mark)[0].status == "forged"  # another key
    assert codec.encode(rid) == mark and codec.encode(uuid.uuid4().hex) != mark
    with pytest.raises(ValueError):
        codec.encode("not-a-request-id")


def test_a_flipped_bit_is_forged_a_lost_character_is_damaged() -> None:
    codec, rid = Codec(SECRET), uuid.uuid4().hex
    text = "stable" + codec.encode(rid)
    for n in (0, 100, 150, 191):  # in the id and in the MAC
        [found] = codec.find(flip_bit(text, n))
        assert found.status == "forged"
    at = text.index(START) + 50
    assert [m.status for m in codec.find(text[:at] + text[at + 1 :])] == ["damaged"]
    assert codec.find("a\u200bb\u2060c") == []  # the text's own zero-width characters are no mark


def test_several_marks_in_one_text_are_each_found_and_checked() -> None:
    codec = Codec(SECRET)
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    text = f"first{codec.encode(a)} second{codec.encode(b)}\nthird{flip_bit(codec.encode(a))}"
    found = codec.find(text)
    assert [(m.status, m.disclosure_id) for m in found[:2]] == [("valid", a), ("valid", b)]
    assert found[2].status == "forged"
    assert visible(text) == "first second\nthird"


@pytest.mark.parametrize(
    "dump",
    [
        lambda v: json.dumps(v, ensure_ascii=True),
        lambda v: json.dumps(v, ensure_ascii=False),
        lambda v: orjson.dumps(v).decode(),
    ],
)
def test_marks_survive_json_re_serialisation_and_escaped_copies(dump: Any) -> None:
    codec, rid = Codec(SECRET), uuid.uuid4().hex
    saved = dump({"note": NOTE + codec.encode(rid)})
    assert [m.disclosure_id for m in codec.find(json.loads(saved)["note"]) if m.status == "valid"] == [rid]
    # The escaped source copied as is (\u200b...) still decodes.
    assert [f.status for f in scan(saved.replace('{"note":', "note:"), codec)] == ["valid"]


def test_xhtml_mark_goes_inside_the_div_and_stays_valid_xhtml() -> None:
    mark = Codec(SECRET).encode(uuid.uuid4().hex)
    marked = insert_mark(DIV, mark, xhtml=True)
    assert marked.endswith(mark + "</div>") and visible(marked) == DIV
    ET.fromstring(marked)  # well-formed XML
    assert insert_mark('<div xmlns="http://www.w3.org/1999/xhtml"/>', mark, xhtml=True).count(START) == 0


def test_re_marking_replaces_the_earlier_mark_and_tag() -> None:
    """A marked text written back to the server and read again carries only the new disclosure."""
    codec, old, new = Codec(SECRET), uuid.uuid4().hex, uuid.uuid4().hex
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"tag": [{"system": "http://example.org/other", "code": "x"}]},
        "note": [{"text": "a"}, {"text": "b"}],
        "text": {"status": "generated", "div": DIV},
    }
    assert mark_resource(obs, old, codec.encode(old), FIELDS) == 3
    assert mark_resource(obs, new, codec.encode(new), FIELDS) == 3
    assert [t["code"] for t in obs["meta"]["tag"]] == ["x", new]
    for text in (obs["note"][0]["text"], obs["note"][1]["text"], obs["text"]["div"]):
        assert [m.disclosure_id for m in codec.find(text)] == [new]
    assert remove_marks(obs["text"]["div"]) == DIV


def test_ndjson_and_plain_text_are_scanned() -> None:
    codec, a, b = Codec(SECRET), uuid.uuid4().hex, uuid.uuid4().hex
    lines = [
        json.dumps({"resourceType": "Observation", "id": "1", "valueString": "x" + codec.encode(a)}),
        json.dumps({"resourceType": "Observation", "id": "2", "note": [{"text": "y" + codec.encode(b)}]}),
    ]
    found = scan("\n".join(lines) + "\n", codec)
    assert [(f.where, f.resource, f.disclosure_id) for f in found] == [
        ("line 1: $.valueString", "Observation/1", a),
        ("line 2: $.note[0].text", "Observation/2", b),
    ]
    assert [(f.where, f.status) for f in scan("[copied]\nline two " + codec.encode(b), codec)] == [
        ("line 2", "valid")
    ]


# --- through the gateway -----------------------------------------------------------------------------


@dataclasses.dataclass
class Disclosed:
    client: Any
    settings: Any
    patient: str
    observation: str
    other_observation: str


@pytest.fixture
async def disclosed(aiohttp_client: Any, make_settings: Any, fhir_server: Any) -> Disclosed:
    settings = make_settings(fhir_server.base, plugins=PLUGINS, watermark_secret=SECRET)
    client = await aiohttp_client(create_app(settings))
    p = f"urn:uuid:{uuid.uuid4()}"

    def observation(code: str, note: str) -> dict[str, Any]:
        return {
            "request": {"method": "POST", "url": "Observation"},
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": p},
                "valueQuantity": {"value": 72, "unit": "/min"},
                "note": [{"text": note}],
                "text": {"status": "generated", "div": DIV},
            },
        }

    entries = [
        {
            "fullUrl": p,
            "request": {"method": "POST", "url": "Patient"},
            "resource": {"resourceType": "Patient", "name": [{"text": "王伟"}], "birthDate": "1961-07-14"},
        },
        {
            "request": {"method": "POST", "url": "Encounter"},
            "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": p},
                "serviceType": {"coding": [{"system": DEPARTMENT_SYSTEM, "code": "cardiology"}]},
            },
        },
        observation("8867-4", NOTE),
        observation("8480-6", "血压平稳"),
    ]
    # A contained resource is a resource of its own (the dev server ignores _include).
    entries[-1]["resource"]["contained"] = [
        {"resourceType": "Practitioner", "id": "nurse", "name": [{"text": "护士 赵"}]}
    ]
    entries[-1]["resource"]["performer"] = [{"reference": "#nurse"}]
    async with aiohttp.ClientSession() as s:
        async with s.post(
            fhir_server.base, json={"resourceType": "Bundle", "type": "transaction", "entry": entries}
        ) as r:
            assert r.status == 200, await r.text()
            out = await r.json(content_type=None)
    ids = [e["response"]["location"].split("/_history")[0] for e in out["entry"]]
    return Disclosed(client, settings, ids[0], ids[2], ids[3])


async def read(d: Disclosed, idp: Any, path: str, sub: str = "dr-wang") -> tuple[Any, Any]:
    token = idp.token("physician", sub=sub, dept="cardiology")
    resp = await d.client.get(path, headers=auth(token))
    assert resp.status == 200, await resp.text()
    return await resp.json(content_type=None), resp.headers


def run_decode(capsys: Any, d: Disclosed, *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["watermark", "decode", *args, "--db", d.settings.db, "--secret", SECRET])
    return code, json.loads(capsys.readouterr().out)


integration = pytest.mark.integration


@integration
async def test_saved_resaved_and_pasted_record_traces_to_its_disclosure(
    disclosed: Disclosed, idp: Any, tmp_path: Path, capsys: Any
) -> None:
    obs, headers = await read(disclosed, idp, f"/fhir/{disclosed.observation}")
    rid = headers["X-Request-Id"]
    assert [t for t in obs["meta"]["tag"] if t["system"] == TAG_SYSTEM] == [
        {"system": TAG_SYSTEM, "code": rid, "display": "disclosed by EMR Guard"}
    ]
    note = obs["note"][0]["text"]
    # Clinical meaning unchanged: the visible text is the original; the narrative is still XHTML.
    assert note != NOTE and visible(note) == NOTE
    assert visible(obs["text"]["div"]) == DIV and ET.fromstring(obs["text"]["div"]) is not None
    get_fhir_model_class("Observation").model_validate(obs)  # still a valid R4B Observation

    files = {
        "ascii.json": json.dumps(obs, ensure_ascii=True, indent=2),
        "utf8.json": json.dumps(obs, ensure_ascii=False),
        "note.txt": "copied from the EMR:\n" + note + "\n",
    }
    for name, content in files.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        code, report = run_decode(capsys, disclosed, str(path))
        assert code == 0, (name, report)
        [disclosure] = report["disclosures"]
        assert disclosure["traced"] and disclosure["request_id"] == rid and disclosure["evidence"] == "mac"
        assert disclosure["operator"] == "dr-wang" and disclosure["purpose"] == "TREAT"
        assert disclosure["patients_disclosed"] == [disclosed.patient]
        assert disclosure["interaction"] == "read" and disclosure["path"] == disclosed.observation
        assert all(m["status"] in ("valid", "unverified") for m in report["marks"])
    # In the JSON the mark sits in the resource its disclosure released; the tag is found too.
    _, report = run_decode(capsys, disclosed, str(tmp_path / "ascii.json"))
    assert {m["kind"] for m in report["marks"]} == {"mark", "tag"}
    assert all(m["resource_in_disclosure"] for m in report["marks"])

    # One flipped zero-width bit: forged/altered, nothing traced.
    tampered = tmp_path / "tampered.txt"
    tampered.write_text(flip_bit(note), encoding="utf-8")
    code, report = run_decode(capsys, disclosed, str(tampered))
    assert code == 1 and report["disclosures"] == []
    assert [m["status"] for m in report["marks"]] == ["forged"]
    assert "forged or altered" in report["marks"][0]["problem"]

    # The real command line, reading stdin, secret and store from the environment.
    env = {
        **os.environ,
        "EMRGUARD_WATERMARK_SECRET": SECRET,
        "EMRGUARD_DB": disclosed.settings.db,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "watermark", "decode", "-"],
        input=files["note.txt"].encode(),
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["disclosures"][0]["operator"] == "dr-wang"


@integration
async def test_valid_mark_without_audit_record_and_no_mark_at_all(
    disclosed: Disclosed, idp: Any, capsys: Any
) -> None:
    await read(disclosed, idp, f"/fhir/{disclosed.observation}")  # the store exists and has records
    orphan = uuid.uuid4().hex
    code, report = run_decode(capsys, disclosed, "--text", "leaked " + Codec(SECRET).encode(orphan))
    assert code == 1
    assert report["marks"] == [
        {"kind": "mark", "status": "valid", "where": "line 1", "disclosure_id": orphan}
    ]
    assert report["disclosures"] == [
        {"request_id": orphan, "traced": False, "evidence": "mac", "problem": "no audit record for this id"}
    ]
    code, report = run_decode(capsys, disclosed, "--text", NOTE)
    assert code == 1 and report["marks"] == [] and report["summary"]["traced"] == 0
    report, traced = decode(NOTE, SECRET, disclosed.settings.db)
    assert not traced


@integration
async def test_every_resource_of_a_search_bundle_is_tagged(disclosed: Disclosed, idp: Any) -> None:
    bundle, headers = await read(disclosed, idp, f"/fhir/Observation?subject={disclosed.patient}")
    rid = headers["X-Request-Id"]
    resources = [slot.resource for slot in collect(bundle)]
    assert sorted(r["resourceType"] for r in resources) == ["Observation", "Observation", "Practitioner"]
    for resource in resources:
        assert [t["code"] for t in resource["meta"]["tag"] if t["system"] == TAG_SYSTEM] == [rid]
    assert "tag" not in (bundle.get("meta") or {})  # the searchset only carries them
    codec = Codec(SECRET)
    notes = [r["note"][0]["text"] for r in resources if r["resourceType"] == "Observation"]
    assert all([m.disclosure_id for m in codec.find(n)] == [rid] for n in notes)


@integration
async def test_watermark_header_names_the_disclosure(disclosed: Disclosed, idp: Any) -> None:
    _, headers = await read(disclosed, idp, f"/fhir/{disclosed.observation}")
    assert headers[HEADER] == headers["X-Request-Id"]
