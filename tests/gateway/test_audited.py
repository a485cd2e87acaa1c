"""The audited wrapper (gateway/audited.py, II.2): a refused write keeps its body hash, and an answer
that cannot be serialised is an audited 500 with nothing released — never a record of a disclosure
that did not happen."""

from __future__ import annotations

import json
from typing import Any

from gateway.app import create_app
from gateway.context import RequestContext
from gateway.hooks import Plugin
from gateway.runtime import GATEWAY
from tests.conftest import UNREACHABLE, RecordingUpstream, auth, read_audit
from tests.gateway.test_pipeline import NO_UPSTREAM_LOOKUPS


async def test_a_write_refused_before_the_decision_is_audited_with_its_body_hash(
    aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    settings = make_settings(UNREACHABLE)
    client = await aiohttp_client(create_app(settings))
    body = json.dumps({"resourceType": "Patient", "id": "p1", "active": True})
    resp = await client.put(
        "/fhir/Patient/p1",
        data=body,
        headers={**auth(idp.token("nurse"), "!!bad purpose!!"), "Content-Type": "application/fhir+json"},
    )
    assert resp.status == 400
    record = read_audit(settings)[-1]
    assert record["reasons"][0]["rule"] == "purpose.malformed"
    assert record["extra"]["body_hash"].startswith("sha256:")


class SetInBody(Plugin):
    """Stands in for a faulty control: puts a value JSON cannot carry into the released body."""

    name = "set_in_body"

    async def before_release(self, ctx: RequestContext, body: Any) -> None:
        body["oops"] = {1, 2}


async def test_an_answer_that_cannot_be_serialised_is_an_audited_500(
    recording: RecordingUpstream, aiohttp_client: Any, make_settings: Any, idp: Any
) -> None:
    recording.reply = {"resourceType": "Patient", "id": "p1", "name": [{"family": "王"}]}
    settings = make_settings(recording.base, plugins=NO_UPSTREAM_LOOKUPS)
    app = create_app(settings)
    app[GATEWAY].plugins.append(SetInBody())
    client = await aiohttp_client(app)
    resp = await client.get("/fhir/Patient/p1", headers=auth(idp.token("records_officer"), "HOPERAT"))
    assert resp.status == 500
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Request-Id"]
    assert "王" not in await resp.text()
    record = read_audit(settings)[-1]
    assert record["status"] == 500 and record["request_id"] == resp.headers["X-Request-Id"]
    assert record["patients_disclosed"] == [] and record["resources_disclosed"] == []
    assert record["reasons"][0]["rule"] == "gateway.internal"
