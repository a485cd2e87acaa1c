"""The edge: every request passes :func:`edge` first (II.2: no answer without its record, also for
what aiohttp would otherwise answer itself). A request target or header over the configured limits
is an audited 414 / 431, and a path that is not one of the gateway's endpoints *as spelt on the
wire* is an audited 404 — ``//fhir/…``, ``/FHIR/…``, ``/%66hir/…`` or ``http://host/fhir/…`` are
refused, never mended into ``/fhir/…``: a proxy in front may have judged the spelling it saw, not
the path it means.

aiohttp's own parser limits are raised above the gateway's (:func:`parser_limits`), on the
application itself, so ``emrguard serve`` and the tests' servers both carry them. A request beyond
even those (a request target over 4 × ``max_url_bytes``, a header field over 4 ×
``max_header_bytes``, more than 2 × ``max_header_count`` fields), or one the HTTP parser cannot read
at all (a raw NUL, newline or non-ASCII byte in the request line, an unknown method, broken
framing), is refused by aiohttp with a bare 400 and no audit record: there is no request to record.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import rules
from gateway.admin import ADMIN_PREFIX
from gateway.audited import refuse
from gateway.config import Settings
from gateway.errors import GatewayError, error
from gateway.pipeline import FHIR_PREFIX
from gateway.runtime import GATEWAY

# The health checks and the metrics are not audited: they disclose nothing (no patient, no operator,
# no policy; counters only), and a load balancer or Prometheus polls them every few seconds. Only
# exactly these spellings reach them.
HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")


def parser_limits(settings: Settings) -> dict[str, Any]:
    """aiohttp's parser limits (``handler_args``), above the gateway's own so that a request over
    the gateway's limits still reaches :func:`edge` and its audited answer."""
    return {
        "max_line_size": 4 * settings.max_url_bytes,
        "max_field_size": 4 * settings.max_header_bytes,
        "max_headers": 2 * settings.max_header_count,
    }


def _not_found() -> GatewayError:
    return error(
        status=404,
        code="not-found",
        rule=rules.NOT_FOUND,
        en="not an endpoint of this gateway: FHIR is served under /fhir and the admin API under /admin, "
        "matched exactly as sent (case, slashes and percent-encoding included); this attempt is audited",
        zh="不存在的接口:FHIR 接口位于 /fhir,管理接口位于 /admin,路径按原样匹配(大小写、斜杠、百分号编码均不做转换);"
        "本次访问已记录审计",
        clause="II.2",
    )


def _too_large(request: web.Request, settings: Settings) -> GatewayError | None:
    """414 / 431 for a request over the configured limits, measured in bytes as received."""
    if len(request.raw_path.encode("utf-8", "surrogateescape")) > settings.max_url_bytes:
        return error(
            status=414,
            code="too-long",
            rule=rules.URI_TOO_LONG,
            en=f"the request target is longer than {settings.max_url_bytes} bytes (max_url_bytes); "
            "search with POST [base]/[type]/_search instead",
            zh=f"请求地址超过 {settings.max_url_bytes} 字节(max_url_bytes);请改用 POST [base]/[type]/_search 检索",
            clause="II.2",
        )
    if len(request.raw_headers) > settings.max_header_count:
        return error(
            status=431,
            code="too-long",
            rule=rules.HEADERS_TOO_LARGE,
            en=f"more than {settings.max_header_count} header fields (max_header_count)",
            zh=f"请求头字段超过 {settings.max_header_count} 个(max_header_count)",
            clause="II.2",
        )
    for name, value in request.raw_headers:
        if len(name) + len(value) > settings.max_header_bytes:
            shown = name[:64].decode("ascii", "replace")
            return error(
                status=431,
                code="too-long",
                rule=rules.HEADERS_TOO_LARGE,
                en=f"header field {shown} is longer than {settings.max_header_bytes} bytes (max_header_bytes)",
                zh=f"请求头 {shown} 超过 {settings.max_header_bytes} 字节(max_header_bytes)",
                clause="II.2",
            )
    return None


def _spelt_as_served(request: web.Request) -> bool:
    """Whether the route aiohttp found is the one the raw path names, letter for letter.

    aiohttp routes on the decoded path (``/%66hir/Patient`` reaches ``/fhir``) and takes absolute
    URLs; the gateway serves a surface only to a path that begins with its prefix as sent.
    """
    if request.match_info.http_exception is not None:  # no route, or a method it does not take
        return False
    resource = request.match_info.route.resource
    served = resource.canonical if resource is not None else ""
    raw = request.raw_path.partition("?")[0]
    for prefix in (FHIR_PREFIX, ADMIN_PREFIX):
        if served == prefix or served.startswith(prefix + "/"):
            return raw == prefix or raw.startswith(prefix + "/")
    return served in HEALTH_PATHS and raw == served


@web.middleware
async def edge(request: web.Request, handler: Any) -> web.StreamResponse:
    """Before anything else: the size limits, then the path; refusals go through the audited wrapper."""
    refusal = _too_large(request, request.app[GATEWAY].settings)
    if refusal is None and not _spelt_as_served(request):
        refusal = _not_found()
    if refusal is not None:
        return await refuse(refusal)(request)
    response: web.StreamResponse = await handler(request)
    return response
