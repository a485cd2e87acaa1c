"""Existence oracles (issue "nothing leaks", classes 7 and 11): trying ids must not tell which
records exist. A record the operator may not see, an id the server does not have and a deleted
record are answered alike — the same 404 ``fhir.not-available`` by read, vread and history — and
only the audit record says which it was and why (I.4, II.2)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import auth, read_audit
from tests.hostile.conftest import stored

pytestmark = pytest.mark.integration


def answer_shape(status: int, body: dict[str, Any]) -> Any:
    """The answer without its request id."""
    text = json.dumps(body)
    for issue in body.get("issue") or []:
        diagnostics = issue.get("diagnostics") or ""
        if "request_id=" in diagnostics:
            text = text.replace(diagnostics.split("request_id=", 1)[1].split()[0], "<id>")
    return status, text


async def test_withheld_unknown_and_deleted_records_look_alike(
    client: Any, idp: Any, fhir_server: Any
) -> None:
    psych = next(p for p, d in fhir_server.departments.items() if d == "psychiatry")
    withheld = await stored(
        fhir_server, {"resourceType": "Condition", "subject": {"reference": psych}, "code": {"text": "F32"}}
    )
    deleted = await stored(
        fhir_server, {"resourceType": "Condition", "subject": {"reference": psych}, "code": {"text": "F33"}}
    )
    async with aiohttp.ClientSession() as s:
        async with s.delete(f"{fhir_server.base}/Condition/{deleted['id']}") as r:
            assert r.status in (200, 204), await r.text()
    nurse = idp.token("nurse", sub="n-exists", dept="cardiology")
    for suffix in ("", "/_history", "/_history/1"):
        shapes = {}
        for name, rid in (
            ("withheld", withheld["id"]),
            ("unknown", "no-such-record-42"),
            ("deleted", deleted["id"]),
        ):
            resp = await client.get(f"/fhir/Condition/{rid}{suffix}", headers=auth(nurse, "TREAT"))
            body = await resp.json(content_type=None)
            record = read_audit(client.settings)[-1]
            assert record["request_id"] == resp.headers["X-Request-Id"] and record["status"] == resp.status
            shapes[name] = answer_shape(resp.status, body)
            text = json.dumps(body)
            assert f"Patient/{psych.split('/')[1]}" not in text and "F3" not in text
        assert shapes["withheld"] == shapes["unknown"], (suffix, shapes)
        if suffix != "/_history":  # a deleted record's history is the server's own business (its versions)
            assert shapes["deleted"] == shapes["unknown"], (suffix, shapes)
        assert shapes["unknown"][0] == 404 and "fhir.not-available" in shapes["unknown"][1]
