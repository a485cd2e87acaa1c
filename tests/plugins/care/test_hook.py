"""The care relationship's facts (I.4), from Encounters, CareTeams and the Patient."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.proxy import UpstreamClient
from plugins.care.hook import DEPARTMENT_SYSTEM, FLAG_SYSTEM, OPERATOR_SYSTEM, CarePlugin, facts_from


def bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def enc(dept: str, status: str = "finished") -> dict:
    return {
        "resourceType": "Encounter",
        "status": status,
        "serviceType": {"coding": [{"system": DEPARTMENT_SYSTEM, "code": dept}]},
    }


def team(member: str, status: str = "active", end: str | None = None) -> dict:
    ct = {
        "resourceType": "CareTeam",
        "status": status,
        "participant": [{"member": {"identifier": {"system": OPERATOR_SYSTEM, "value": member}}}],
    }
    if end:
        ct["period"] = {"end": end}
    return ct


def test_departments_team_and_flags():
    patient = {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": FLAG_SYSTEM, "code": "VIP"}, {"system": "other", "code": "VIP"}]},
    }
    facts = facts_from(
        bundle(enc("cardiology"), enc("oncology")), bundle(team("dr-li")), patient, "2026-12-01T00:00:00Z"
    )
    assert facts == {"departments": ["cardiology", "oncology"], "care_team": ["dr-li"], "flags": ["VIP"]}


def test_void_encounters_and_ended_care_teams_make_no_relationship():
    """Security review: every Encounter ever and every CareTeam, whatever its status, added access."""
    facts = facts_from(
        bundle(enc("psychiatry", "entered-in-error"), enc("oncology", "cancelled")),
        bundle(
            team("dr-old", end="2025-01-01T00:00:00Z"),
            team("dr-gone", status="inactive"),
            team("dr-now", end="2027-01-01T00:00:00Z"),
        ),
        {"resourceType": "Patient"},
        "2026-12-01T00:00:00Z",
    )
    assert facts["departments"] == [] and facts["care_team"] == ["dr-now"]


# --- single flight (issue 9): concurrent requests for one patient share one upstream lookup -------


class CountingUpstream:
    """A real HTTP server standing in for the FHIR server's batch endpoint: it counts batches and
    answers slowly, so that concurrent lookups overlap."""

    def __init__(self, status: int = 200) -> None:
        self.batches = 0
        self.status = status

    async def handle(self, request: web.Request) -> web.Response:
        self.batches += 1
        body = await request.json()
        await asyncio.sleep(0.2)
        if self.status != 200:
            return web.json_response({"resourceType": "OperationOutcome", "issue": []}, status=self.status)
        entries = [
            {"response": {"status": "200 OK"}, "resource": bundle(enc("cardiology"))}
            if "?" in e["request"]["url"]
            else {"response": {"status": "200 OK"}, "resource": {"resourceType": "Patient"}}
            for e in body["entry"]
        ]
        return web.json_response({"resourceType": "Bundle", "type": "batch-response", "entry": entries})


async def _plugin(aiohttp_server: Any, make_settings: Any, upstream: CountingUpstream) -> CarePlugin:
    app = web.Application()
    app.router.add_post("/fhir", upstream.handle)
    server = await aiohttp_server(app)
    client = UpstreamClient(make_settings(str(server.make_url("/fhir"))))
    await client.start()
    plugin = CarePlugin()
    plugin.upstream, plugin.ttl = client, 30.0
    return plugin


def _ctx(n: int) -> RequestContext:
    return RequestContext(f"rid-{n}", "GET", "Patient/p1", "", None, None, {})


async def test_concurrent_lookups_of_one_patient_share_one_upstream_batch(
    aiohttp_server: Any, make_settings: Any
) -> None:
    upstream = CountingUpstream()
    plugin = await _plugin(aiohttp_server, make_settings, upstream)
    contexts = [_ctx(n) for n in range(10)]
    await asyncio.gather(*(plugin._load(c, ["Patient/p1"]) for c in contexts))
    assert upstream.batches == 1
    assert all(c.patient_context["Patient/p1"]["departments"] == ["cardiology"] for c in contexts)
    await plugin.upstream.close()  # type: ignore[union-attr]


async def test_a_failed_shared_lookup_fails_every_waiter_and_is_not_remembered(
    aiohttp_server: Any, make_settings: Any
) -> None:
    upstream = CountingUpstream(status=500)
    plugin = await _plugin(aiohttp_server, make_settings, upstream)
    results = await asyncio.gather(
        *(plugin._load(_ctx(n), ["Patient/p1"]) for n in range(5)), return_exceptions=True
    )
    assert upstream.batches == 1
    assert all(isinstance(r, GatewayError) and r.status == 502 for r in results)  # fail closed, all of them
    upstream.status = 200
    ctx = _ctx(9)
    await plugin._load(ctx, ["Patient/p1"])  # asked again, not a remembered failure
    assert upstream.batches == 2 and ctx.patient_context["Patient/p1"]["departments"] == ["cardiology"]
    await plugin.upstream.close()  # type: ignore[union-attr]
