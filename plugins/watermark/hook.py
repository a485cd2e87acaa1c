"""Digital watermarks (II.2 支持通过数字水印等技术手段,确保使用过程留痕): every released resource
carries the id of its disclosure, which is the request id of its audit record.

On every response, after the filter and before the audit record is committed, each resource in
the body (not the Bundles and Parameters that only carry them) gets a ``meta.tag`` with the
disclosure id, and each configured free-text field (``watermark_fields``) an invisible, MAC-keyed
mark (codec.py beside this module). ``emrguard watermark decode`` traces a leaked file or pasted text back
to the operator, time, purpose and patients of that disclosure.
"""

from __future__ import annotations

from typing import Any

from gateway.config import ConfigError
from gateway.context import RequestContext
from gateway.fhir.resources import collect
from gateway.hooks import Plugin
from gateway.runtime import Gateway
from plugins.watermark.codec import HEADER, Codec, mark_resource, parse_fields

MIN_SECRET = 32


class WatermarkPlugin(Plugin):
    name = "watermark"

    def __init__(self) -> None:
        self.codec: Codec | None = None
        self.fields: list[tuple[str, ...]] = []

    async def start(self, gw: Gateway) -> None:
        settings = gw.settings
        if len(settings.watermark_secret) < MIN_SECRET:  # no marks, no release (config.py checks too)
            raise ConfigError(
                f"config key 'watermark_secret': at least {MIN_SECRET} characters are required (II.2)"
            )
        self.codec = Codec(settings.watermark_secret)
        self.fields = parse_fields(settings.watermark_fields)

    async def before_release(self, ctx: RequestContext, body: Any) -> None:
        assert self.codec is not None, "watermark plugin used before start()"
        slots = collect(body)
        if not slots:
            return
        disclosure_id = ctx.request_id
        mark = self.codec.encode(disclosure_id)  # raises on a malformed id: nothing leaves unmarked
        texts = sum(mark_resource(slot.resource, disclosure_id, mark, self.fields) for slot in slots)
        ctx.audit_extra["watermark"] = {"resources_tagged": len(slots), "texts_marked": texts}
        ctx.response_headers[HEADER] = disclosure_id


PLUGIN = WatermarkPlugin
