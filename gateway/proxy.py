"""The upstream FHIR client: one pooled keep-alive session, JSON only, bounded, fail closed.

Only an allow-list of request headers goes upstream: the caller's ``Authorization`` never does
(the upstream gets the gateway's own credentials, if configured), nor cookies or hop-by-hop
headers. Absolute upstream URLs in the answer are rewritten to the gateway's base so that a
client's next request (a paging link, a Location) comes back through the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import rules
from gateway.config import Settings
from gateway.errors import GatewayError, error

FHIR_JSON = "application/fhir+json"
# Request headers a FHIR server needs for conditional and versioned interactions; nothing else.
FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "If-None-Exist",
    "If-Modified-Since",
    "Prefer",
    "Accept-Language",
)
FORWARDED_RESPONSE_HEADERS = ("ETag", "Last-Modified", "Location", "Content-Location")
#: Not sent with a read: a 304 would carry no resource to judge, yet confirm that a record exists at
#: that version (an oracle on records the operator may not see). Reads always get the whole answer.
CONDITIONAL_READ_HEADERS = frozenset({"if-none-match", "if-modified-since"})
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class UpstreamResponse:
    status: int
    headers: CIMultiDict[str]
    body: Any  # parsed JSON, or None for an empty body


class UpstreamClient:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.upstream_url.rstrip("/")
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=s.upstream_pool_size, keepalive_timeout=60, ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(total=s.upstream_timeout, sock_connect=s.upstream_connect_timeout),
            auto_decompress=True,  # gzip/deflate/br bodies are decoded before the filter sees them
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ready(self) -> bool:
        try:
            resp = await self.send("GET", "metadata", "", None, b"", "readyz")
            return resp.status == 200
        except GatewayError:
            return False

    def _request_headers(
        self, method: str, incoming: CIMultiDictProxy[str] | None, request_id: str
    ) -> dict[str, str]:
        headers = {
            name: incoming[name]
            for name in FORWARDED_REQUEST_HEADERS
            if incoming
            and name in incoming
            and not (method.upper() in READ_METHODS and name.lower() in CONDITIONAL_READ_HEADERS)
        }
        headers["Accept"] = FHIR_JSON
        headers["X-Request-Id"] = request_id
        if self.settings.upstream_authorization:
            headers["Authorization"] = self.settings.upstream_authorization
        return headers

    async def send(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: CIMultiDictProxy[str] | None,
        body: bytes,
        request_id: str,
        extra_headers: dict[str, str] | None = None,
    ) -> UpstreamResponse:
        assert self._session is not None, "upstream client not started"
        url = f"{self.base}/{path}" if path else self.base
        if query_string:
            url = f"{url}?{query_string}"
        try:
            async with self._session.request(
                method,
                url,
                data=body or None,
                headers={**self._request_headers(method, headers, request_id), **(extra_headers or {})},
                allow_redirects=False,
            ) as resp:
                raw = await self._read_bounded(resp)
                out_headers = CIMultiDict(
                    (k, resp.headers[k]) for k in FORWARDED_RESPONSE_HEADERS if k in resp.headers
                )
                content_type = resp.headers.get("Content-Type", "")
                status = resp.status
        except TimeoutError:
            raise error(
                status=504,
                code="timeout",
                rule=rules.UPSTREAM_TIMEOUT,
                en="the FHIR server did not answer in time",
                zh="电子病历 FHIR 服务器响应超时",
            ) from None
        except aiohttp.ClientError as exc:
            raise error(
                status=502,
                code="transient",
                rule=rules.UPSTREAM_UNREACHABLE,
                en=f"the FHIR server could not be reached ({type(exc).__name__})",
                zh="无法连接电子病历 FHIR 服务器",
            ) from None
        if not raw.strip():
            return UpstreamResponse(status, out_headers, None)
        if "json" not in content_type.lower():
            # Anything but JSON would pass the per-resource filter unseen: refuse it.
            raise error(
                status=502,
                code="not-supported",
                rule=rules.UPSTREAM_NOT_JSON,
                en=f"the FHIR server answered '{content_type}', not FHIR JSON",
                zh="FHIR 服务器返回的不是 FHIR JSON",
            )
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise error(
                status=502,
                code="invalid",
                rule=rules.UPSTREAM_BAD_JSON,
                en="the FHIR server's answer is not valid JSON",
                zh="FHIR 服务器返回的 JSON 无法解析",
            ) from None
        return UpstreamResponse(status, out_headers, parsed)

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_response_bytes
        if (
            resp.content_length is not None
            and resp.content_length > limit
            and "Content-Encoding" not in resp.headers
        ):
            raise self._too_large(limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _too_large(limit: int) -> GatewayError:
        return error(
            status=502,
            code="too-costly",
            rule=rules.UPSTREAM_TOO_LARGE,
            en=f"the FHIR server's answer exceeds {limit} bytes; narrow the search (_count)",
            zh=f"FHIR 服务器返回内容超过 {limit} 字节,请缩小查询范围(_count)",
        )


async def batch_get(upstream: UpstreamClient, urls: list[str], request_id: str) -> list[Any] | None:
    """GET these relative URLs in one batch: the answer entries, one per URL, or None if the server
    did not answer the batch whole (the caller fails closed)."""
    entries = [{"request": {"method": "GET", "url": url}} for url in urls]
    resp = await upstream.send(
        "POST",
        "",
        "",
        None,
        orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}),
        request_id,
        extra_headers={"Content-Type": "application/fhir+json"},
    )
    answers = resp.body.get("entry") if isinstance(resp.body, dict) else None
    if resp.status != 200 or not isinstance(answers, list) or len(answers) != len(urls):
        return None
    return answers


def rewrite_urls(body: Any, upstream_base: str, public_base: str) -> None:
    """Point absolute upstream URLs in Bundles (links, fullUrl, response.location) at the gateway."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return
    for link in body.get("link") or []:
        if isinstance(link, dict) and isinstance(link.get("url"), str):
            link["url"] = rewrite_url(link["url"], upstream_base, public_base)
    for entry in body.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("fullUrl"), str):
            entry["fullUrl"] = rewrite_url(entry["fullUrl"], upstream_base, public_base)
        response = entry.get("response")
        if isinstance(response, dict) and isinstance(response.get("location"), str):
            response["location"] = rewrite_url(response["location"], upstream_base, public_base)
        rewrite_urls(entry.get("resource"), upstream_base, public_base)


def rewrite_url(url: str, upstream_base: str, public_base: str) -> str:
    if url == upstream_base or url.startswith(upstream_base + "/") or url.startswith(upstream_base + "?"):
        return public_base + url[len(upstream_base) :]
    return url
