"""The edge (gateway/edge.py, II.2): every request is answered by the gateway and audited, also those
aiohttp would otherwise answer itself — a path that is not an endpoint as spelt on the wire, a
request target or header over the configured limits. The requests go over a raw socket: an HTTP
client would mend ``//fhir``, ``/%66hir`` or ``/fhir/../admin`` before sending them."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest

from gateway.app import create_app
from gateway.config import ConfigError, Settings, validate
from gateway.runtime import GATEWAY
from tests.conftest import SEC, UNREACHABLE, read_audit

NOT_FOUND = "gateway.not-found"


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class Edge:
    def __init__(self, client: Any, settings: Settings, idp: Any) -> None:
        self.client = client
        self.settings = settings
        self.idp = idp

    async def raw(self, method: str, target: str, headers: list[tuple[str, str]] | None = None) -> Answer:
        """One request exactly as written (``target`` byte for byte), on its own connection."""
        lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        await writer.drain()
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in header_lines)
        parsed = orjson.loads(body) if body and "json" in fields.get("Content-Type", "") else body
        return Answer(int(status_line.split(" ")[1]), fields, parsed)

    async def attempt(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None
    ) -> tuple[Answer, dict[str, Any]]:
        """The answer, which must be audited by exactly one new record naming its request id."""
        before = len(read_audit(self.settings))
        answer = await self.raw(method, target, headers)
        records = read_audit(self.settings)
        assert len(records) == before + 1, f"{method} {target[:60]}: {len(records) - before} records"
        record = records[-1]
        assert answer.headers["X-Request-Id"] == record["request_id"]
        assert answer.headers["Cache-Control"] == "no-store"
        assert record["status"] == answer.status and record["method"] == method
        if method != "HEAD":
            assert answer.body["resourceType"] == "OperationOutcome"
            assert record["request_id"] in answer.body["issue"][0]["diagnostics"]
        return answer, record

    def token(self, who: dict[str, str]) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.idp.token(**who)}"), ("X-Purpose-Of-Use", "TREAT")]


@pytest.fixture
async def edge(aiohttp_client: Any, make_settings: Any, idp: Any) -> Edge:
    settings = make_settings(UNREACHABLE)
    return Edge(await aiohttp_client(create_app(settings)), settings, idp)


def rules_of(answer: Answer) -> list[str]:
    return [
        c["code"]
        for i in answer.body["issue"]
        for c in i["details"]["coding"]
        if c["system"].endswith("/rule")
    ]


def clauses_of(answer: Answer) -> list[str]:
    return [
        c["code"]
        for i in answer.body["issue"]
        for c in i["details"]["coding"]
        if c["system"].endswith("clause")
    ]


# --- paths: outside /fhir and /admin, or spelt otherwise than served: an audited 404 ---------------

OUTSIDE = [
    ("GET", "//fhir/Patient"),  # a proxy may have judged "//fhir/…" as something else: refused, not mended
    ("GET", "//fhir/fhir/Patient"),
    ("GET", "//x/fhir/Patient"),
    ("GET", "/FHIR/Patient"),
    ("GET", "/Fhir/Patient/1"),
    ("GET", "/%66hir/Patient"),  # aiohttp would route the decoded path to /fhir
    ("GET", "/%66%68%69%72/Patient/1"),
    ("GET", "/fhir%2FPatient"),
    ("GET", "/fhir%2fPatient/1"),
    ("GET", "/fhirPatient"),
    ("GET", "/fhir.json"),
    ("GET", "/fhir;v=1/Patient"),
    ("GET", "/fhir\\Patient"),
    ("GET", "http://evil.example/fhir/Patient"),  # absolute form: served only in origin form
    ("GET", "/"),
    ("GET", "/anything"),
    ("GET", "/favicon.ico"),
    ("GET", "/robots.txt"),
    ("GET", "/.well-known/x"),
    ("GET", "/.well-known/smart-configuration"),
    ("GET", "/x%00y"),  # NUL
    ("GET", "/x%0Ay"),  # newline
    ("GET", "/x%0D%0AX-Injected:%201"),
    ("GET", "/ADMIN/audit"),
    ("GET", "/%61dmin/audit"),
    ("GET", "/admin%2Faudit"),
    ("GET", "/healthz/"),
    ("GET", "/%68ealthz"),
    ("GET", "/HEALTHZ"),
    ("POST", "/healthz"),  # a method the health checks do not take: audited, not aiohttp's 405
    ("DELETE", "/readyz"),
    ("PUT", "/anything"),
    ("DELETE", "/anything"),
    ("OPTIONS", "/anything"),
    ("OPTIONS", "*"),
    ("TRACE", "/anything"),
    ("PATCH", "/anything"),
    ("POST", "/"),
    ("HEAD", "/anything"),
    ("CONNECT", "gateway.test:443"),
    ("PROPFIND", "/fhir%2F"),
]


@pytest.mark.parametrize(("method", "target"), OUTSIDE, ids=[f"{m} {t}" for m, t in OUTSIDE])
async def test_a_path_that_is_no_endpoint_gets_an_audited_404(edge: Edge, method: str, target: str) -> None:
    answer, record = await edge.attempt(method, target, edge.token(SEC))
    assert answer.status == 404
    assert answer.headers["Content-Type"].startswith("application/fhir+json")
    assert record["reasons"][0]["rule"] == NOT_FOUND and record["reasons"][0]["clause"] == "II.2"
    assert record["path"] == target.partition("?")[0]  # the raw path, never a mended one
    assert record["operator"] is None and record["decision"] == "none"
    if method != "HEAD":
        assert rules_of(answer) == [NOT_FOUND] and clauses_of(answer) == ["II.2"]
        text = answer.body["issue"][0]["details"]["text"]
        assert "/fhir" in text and "不存在" in text  # zh + en


async def test_what_reaches_fhir_or_admin_is_decided_there_as_before_and_its_twins_are_not(
    edge: Edge,
) -> None:
    """A path that begins with /fhir/ or /admin/ as sent is its surface's to decide, dot segments
    and all (the FHIR parser refuses them); the same request with the prefix spelt otherwise never
    gets there. The health checks are not audited: they disclose nothing."""
    doc = edge.token(dict(roles="physician", sub="u-physician-001"))
    cases = [
        # (target, who, status, rule) as the surface decides, and the twin the edge refuses
        ("/fhir/../admin", doc, 400, "fhir.bad-id", "/%66hir/../admin"),
        ("/fhir/%2e%2e/admin/audit", doc, 400, "fhir.bad-id", "//fhir/%2e%2e/admin/audit"),
        ("/fhir/Patient/%2e%2e/Observation", doc, 400, "fhir.bad-id", "/FHIR/Patient/%2e%2e/Observation"),
        ("/fhir/./Patient", doc, 400, "fhir.bad-id", "/fhir%2F./Patient"),
        ("/fhir/Patient", [], 401, "auth.missing-token", "//fhir/Patient"),
        ("/fhir", [], 401, "auth.missing-token", "/FHIR"),
        ("/admin/../fhir", edge.token(SEC), 404, "admin.unknown-endpoint", "/Admin/../fhir"),
        ("/admin/audit", [], 401, "auth.missing-token", "/%61dmin/audit"),
    ]
    for target, who, status, rule, twin in cases:
        answer, record = await edge.attempt("GET", target, who)
        assert (answer.status, rules_of(answer)[0]) == (status, rule), target
        assert record["reasons"][0]["rule"] == rule
        refused, twin_record = await edge.attempt("GET", twin, who)
        assert refused.status == 404 and twin_record["reasons"][0]["rule"] == NOT_FOUND, twin
    before = len(read_audit(edge.settings))
    for target in ("/healthz", "/healthz?probe=1"):
        answer = await edge.raw("GET", target)
        assert answer.status == 200 and answer.body == {"status": "ok"}
    assert len(read_audit(edge.settings)) == before


async def test_a_newline_or_nul_under_fhir_is_refused_by_the_fhir_surface(edge: Edge) -> None:
    doc = edge.token(dict(roles="physician", sub="u-physician-001"))
    for target in ("/fhir/Pat%00ient", "/fhir/Patient/1%0A"):
        answer, record = await edge.attempt("GET", target, doc)
        assert answer.status == 400 and rules_of(answer)[0].startswith("fhir.")
    for target in ("/%00fhir/Patient", "/fhir%0A/Patient"):
        answer, record = await edge.attempt("GET", target, doc)
        assert answer.status == 404 and record["reasons"][0]["rule"] == NOT_FOUND


# --- sizes: just under passes, just over is an audited 414 / 431 -------------------------------------


def target_of(length: int, prefix: str = "/fhir/Patient?name=") -> str:
    return prefix + "a" * (length - len(prefix))


async def test_the_request_target_limit_is_the_gateways_and_audited(edge: Edge) -> None:
    limit = edge.settings.max_url_bytes
    assert limit == 8192
    for length in (limit - 1, limit):  # aiohttp alone refused a target over 8190 bytes unaudited
        answer, record = await edge.attempt("GET", target_of(length))
        assert answer.status == 401 and record["reasons"][0]["rule"] == "auth.missing-token"
    for target in (target_of(limit + 1), target_of(9 * 1024), target_of(9 * 1024, "/")):
        answer, record = await edge.attempt("GET", target, edge.token(SEC))
        assert answer.status == 414 and rules_of(answer) == ["gateway.uri-too-long"]
        assert clauses_of(answer) == ["II.2"] and record["operator"] is None
        assert len(record["path"]) <= 1024 and len(record["query"]) <= 2048  # bounded


async def test_the_header_limits_are_the_gateways_and_audited(edge: Edge) -> None:
    limit = edge.settings.max_header_bytes
    assert limit == 8192
    name = "X-Padding"
    answer, record = await edge.attempt("GET", "/fhir/Patient", [(name, "v" * (limit - len(name)))])
    assert answer.status == 401 and record["reasons"][0]["rule"] == "auth.missing-token"
    for size in (limit + 1, 10 * 1024):
        answer, record = await edge.attempt("GET", "/fhir/Patient", [(name, "v" * (size - len(name)))])
        assert answer.status == 431 and rules_of(answer) == ["gateway.headers-too-large"]
        assert name in answer.body["issue"][0]["details"]["text"]
    # the count: Host and Connection are two of them
    count = edge.settings.max_header_count
    assert count == 100
    many = [(f"X-H{i}", "1") for i in range(count - 2)]
    answer, _ = await edge.attempt("GET", "/fhir/Patient", many)
    assert answer.status == 401
    for extra in (1, 50):  # 150 fields: over aiohttp's own default of 128 too
        answer, record = await edge.attempt(
            "GET", "/fhir/Patient", many + [(f"X-M{i}", "1") for i in range(extra)]
        )
        assert answer.status == 431 and record["reasons"][0]["rule"] == "gateway.headers-too-large"


async def test_the_limits_are_settings(aiohttp_client: Any, make_settings: Any, idp: Any) -> None:
    settings = make_settings(UNREACHABLE, max_url_bytes=512, max_header_bytes=256, max_header_count=10)
    edge = Edge(await aiohttp_client(create_app(settings)), settings, idp)
    assert (await edge.attempt("GET", target_of(512)))[0].status == 401
    assert (await edge.attempt("GET", target_of(513)))[0].status == 414
    assert (await edge.attempt("GET", "/fhir/Patient", [("X-P", "v" * 253)]))[0].status == 401
    assert (await edge.attempt("GET", "/fhir/Patient", [("X-P", "v" * 254)]))[0].status == 431
    assert (await edge.attempt("GET", "/", [(f"X-{i}", "1") for i in range(9)]))[0].status == 431
    for key, bad in (("max_url_bytes", 0), ("max_header_bytes", 2 << 20), ("max_header_count", -1)):
        with pytest.raises(ConfigError, match=key):
            validate(dataclasses.replace(settings, **{key: bad}))


async def test_an_edge_refusal_whose_record_cannot_be_written_is_a_503(edge: Edge) -> None:
    await edge.client.server.app[GATEWAY].store.close()  # the store is gone: no answer without its record
    for target in ("//fhir/Patient", target_of(9 * 1024)):
        answer = await edge.raw("GET", target)
        assert answer.status == 503 and rules_of(answer) == ["audit.unavailable"]
        assert clauses_of(answer) == ["II.2"] and answer.headers["X-Request-Id"]
