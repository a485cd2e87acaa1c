"""Break-the-glass reasons are real text (I.4): what is left once whitespace and invisible
characters are taken out must hold ``break_glass_min_reason_chars`` letters or digits (a Chinese
character is one); the cleaned text is what the policy sees and the audit record keeps. Refusals
are audited 400s naming ``break-glass.no-reason`` and I.4. The headers go over a raw socket as
UTF-8 bytes, exactly as an EMR client writes them."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest

from gateway.app import create_app
from gateway.config import ConfigError, Settings, validate
from tests.conftest import UNREACHABLE, read_audit

NO_REASON = "break-glass.no-reason"


class Clinic:
    def __init__(self, client: Any, settings: Settings, idp: Any) -> None:
        self.client = client
        self.settings = settings
        self.token = idp.token("physician", sub="u-er-001", dept="emergency")

    async def break_glass(self, reason: str) -> tuple[int, dict[str, str], Any, dict[str, Any]]:
        """An emergency read with this reason; the answer and its one new audit record."""
        before = len(read_audit(self.settings))
        head = (
            "GET /fhir/Patient/p-262 HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n"
            f"Authorization: Bearer {self.token}\r\nX-Purpose-Of-Use: ETREAT\r\n"
            f"X-Break-Glass-Reason: {reason}\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
        writer.write(head.encode("utf-8"))
        await writer.drain()
        data = await reader.read()
        writer.close()
        raw_head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        records = read_audit(self.settings)
        assert len(records) == before + 1
        record = records[-1]
        assert headers["X-Request-Id"] == record["request_id"]
        return int(status_line.split(" ")[1]), headers, orjson.loads(body), record


@pytest.fixture
async def clinic(aiohttp_client: Any, make_settings: Any, idp: Any) -> Clinic:
    settings = make_settings(UNREACHABLE)
    return Clinic(await aiohttp_client(create_app(settings)), settings, idp)


HOLLOW = {
    "zero-width space": "\u200b",
    "zero-width joiners and word joiner": "\u200c\u200d\u2060\ufeff",
    "NBSP around a zero-width space": "\u00a0\u200b\u00a0",
    "direction overrides": "\u202e\u202d\u2066\u2069",
    "C1 controls": "\u0080\u0085\u009f",
    # raw C0 controls other than tab never get here: aiohttp's parser refuses the request (a bare 400)
    "tabs and a dot": "\t.\t",
    "tag characters (invisible letters)": "\U000e0061\U000e0062\U000e0063\U000e0064",
    "Hangul fillers (letters that show nothing)": "\u3164\u3164\u115f\u1160\uffa0",
    "private use": "\ue000\ue001\ue002\ue003",
    "pure punctuation": "....",
    "punctuation and symbols": "!!! ??? --- *** ☺☺",
    "fullwidth punctuation": "。。。,,!!",
    "one letter and combining marks": "a\u0301\u0301\u0301\u0301",
    "urgent x3": "急急急",
    "three letters behind invisible padding": "\u200ba\u200bb\u200bc\u200b",
}


@pytest.mark.parametrize("reason", HOLLOW.values(), ids=HOLLOW.keys())
async def test_a_hollow_reason_is_refused_and_audited(clinic: Clinic, reason: str) -> None:
    status, headers, body, record = await clinic.break_glass(reason)
    assert status == 400 and body["resourceType"] == "OperationOutcome"
    assert headers["Cache-Control"] == "no-store"
    codes = {c["code"] for c in body["issue"][0]["details"]["coding"]}
    assert codes == {NO_REASON, "I.4"}
    assert "至少 4 个" in body["issue"][0]["details"]["text"]
    assert record["reasons"][0]["rule"] == NO_REASON and record["reasons"][0]["clause"] == "I.4"
    assert record["status"] == 400 and "break_glass_reason" not in record.get("extra", {})
    assert record["operator"] == "u-er-001"  # who tried is on the record


REAL = {
    # sent -> what the policy sees and the record keeps
    "\ufeff急诊抢救": "急诊抢救",  # exactly the minimum: four Chinese characters
    " 患者\u200b昏迷,\u00a0疑似\t药物  过量 \u2060": "患者昏迷, 疑似 药物 过量",
    "unconscious,\u00a0suspected\u200b overdose": "unconscious, suspected overdose",
    "\u202eCPR\u202c 1234": "CPR 1234",
}


@pytest.mark.parametrize(("sent", "kept"), REAL.items(), ids=range(len(REAL)))
async def test_a_real_reason_is_kept_as_cleaned_text(clinic: Clinic, sent: str, kept: str) -> None:
    status, _, body, record = await clinic.break_glass(sent)
    assert NO_REASON not in {r["rule"] for r in record["reasons"]}, body
    assert status != 400
    assert record["extra"]["break_glass_reason"] == kept
    assert "break_glass_reason_truncated" not in record["extra"]


async def test_a_long_reason_is_cut_at_500_and_the_record_says_so(clinic: Clinic) -> None:
    sent = "急诊" + "\u200b" * 50 + "抢救" * 299  # 600 characters once cleaned
    status, _, _, record = await clinic.break_glass(sent)
    assert status != 400
    kept = record["extra"]["break_glass_reason"]
    assert len(kept) == 500 and kept == ("急诊" + "抢救" * 299)[:500]
    assert record["extra"]["break_glass_reason_truncated"] is True


async def test_the_minimum_is_a_setting(aiohttp_client: Any, make_settings: Any, idp: Any) -> None:
    settings = make_settings(UNREACHABLE, break_glass_min_reason_chars=2)
    clinic = Clinic(await aiohttp_client(create_app(settings)), settings, idp)
    status, _, _, record = await clinic.break_glass("昏迷")
    assert status != 400 and record["extra"]["break_glass_reason"] == "昏迷"
    status, _, body, _ = await clinic.break_glass("昏")
    assert status == 400 and "至少 2 个" in body["issue"][0]["details"]["text"]
    for bad in (0, 501):
        with pytest.raises(ConfigError, match="break_glass_min_reason_chars"):
            validate(dataclasses.replace(settings, break_glass_min_reason_chars=bad))
