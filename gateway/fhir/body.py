"""The body of a FHIR request: JSON for writes and operations, a form for ``POST _search``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from gateway import rules
from gateway.errors import error

JSON_BODY_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json")
FORM_TYPE = "application/x-www-form-urlencoded"


async def read_all(request: web.Request, rule: str = rules.BODY_TOO_LARGE) -> bytes:
    """The whole body, bounded by max_request_bytes: over it, a 413 OperationOutcome."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise error(
            status=413, code="too-long", rule=rule, en="the request body is too large", zh="请求体过大"
        ) from None


async def read_body(request: web.Request, path: str) -> tuple[bytes, Any, list[tuple[str, str]]]:
    """Raw body, its JSON (or None), and form fields of a POST _search."""
    if not request.body_exists:
        return b"", None, []
    raw = await read_all(request)
    if not raw:
        return b"", None, []
    content_type = request.content_type.lower()
    if path.rstrip("/").endswith("_search"):
        # Search parameters in any other body would reach the server unseen by the policy.
        if content_type != FORM_TYPE:
            raise error(
                status=415,
                code="not-supported",
                rule=rules.MEDIA_TYPE,
                en=f"POST _search takes {FORM_TYPE}, not '{content_type}'",
                zh=f"POST _search 只接受 {FORM_TYPE} 格式,不接受“{content_type}”",
            )
        try:
            return raw, None, parse_qsl(raw.decode("utf-8", errors="strict"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise error(
                status=400,
                code="invalid",
                rule=rules.BAD_FORM,
                en="the search form is not UTF-8",
                zh="查询表单不是 UTF-8 编码",
            ) from None
    if content_type not in JSON_BODY_TYPES:
        raise error(
            status=415,
            code="not-supported",
            rule=rules.MEDIA_TYPE,
            en=f"request body type '{content_type}' is not accepted; send application/fhir+json",
            zh=f"不接受“{content_type}”格式的请求体;请使用 application/fhir+json",
        )
    try:
        return raw, orjson.loads(raw), []
    except orjson.JSONDecodeError as exc:
        raise error(
            status=400,
            code="invalid",
            rule=rules.BAD_JSON,
            en=f"the request body is not valid JSON ({exc})",
            zh="请求体不是有效的 JSON",
        ) from None
