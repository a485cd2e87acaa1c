"""Break-the-glass (I.4, II.3): an emergency reason lets a clinician reach a patient outside the
care relationship — each time said, audited and alerted, never into a sealed record.

This plugin only carries the reason from the ``X-Break-Glass-Reason`` header into the policy input
(``break_glass``); the policy decides whether it waives the care relationship (purpose ETREAT or
BTG, a clinical role) and asks for the alert, which the gateway commits with the audit record.

A reason must be text a person can read: invisible characters (Unicode control, format — the
zero-width space, joiners, direction marks —, private-use, unassigned, and the Hangul fillers that
pass for letters) are taken out, runs of whitespace (NBSP included) become one space, and what is
left must hold at least ``break_glass_min_reason_chars`` letters or digits (a Chinese character is
a letter): "....", "\\u200b" or "急急急" are refused, "患者昏迷" passes. That cleaned text is what the
policy sees and the audit record keeps; past :data:`MAX_REASON` characters it is cut there (an
emergency is not refused for saying too much) and the record says so
(``break_glass_reason_truncated``).
"""

from __future__ import annotations

import unicodedata
from typing import Any

from gateway.config import MAX_BREAK_GLASS_REASON
from gateway.context import RequestContext
from gateway.errors import error
from gateway.hooks import Plugin
from gateway.runtime import Gateway

#: The rule id this control refuses with (OperationOutcome, audit record).
NO_REASON = "break-glass.no-reason"

HEADER = "X-Break-Glass-Reason"
MAX_REASON = MAX_BREAK_GLASS_REASON
#: Letters by their Unicode category that render as nothing (Hangul fillers).
INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def clean(reason: str) -> str:
    """The reason as a person reads it: no invisible characters, whitespace runs as one space."""
    visible = "".join(
        " " if ch.isspace() else ch
        for ch in reason
        if ch.isspace() or (unicodedata.category(ch)[0] != "C" and ch not in INVISIBLE_LETTERS)
    )
    return " ".join(visible.split())


def letters_and_digits(text: str) -> int:
    return sum(1 for ch in text if unicodedata.category(ch)[0] in "LN")


class BreakGlassPlugin(Plugin):
    name = "break_glass"

    def __init__(self) -> None:
        self.min_chars = 4

    async def start(self, gw: Gateway) -> None:
        self.min_chars = gw.settings.break_glass_min_reason_chars

    async def before_decision(self, ctx: RequestContext) -> None:
        raw = ctx.headers.get(HEADER)
        if raw is None:
            return
        # Headers are latin-1 on the wire: a UTF-8 reason (Chinese) arrives as mojibake. Undo it.
        try:
            reason = raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            reason = raw
        cleaned = clean(reason)
        reason = cleaned[:MAX_REASON].rstrip()
        if letters_and_digits(reason) < self.min_chars:
            raise error(
                status=400,
                code="invalid",
                rule=NO_REASON,
                en=f"{HEADER} must say why this emergency access is needed, in at least {self.min_chars} "
                "letters or digits (whitespace, punctuation and invisible characters do not count)",
                zh=f"{HEADER} 必须说明紧急访问的理由,至少 {self.min_chars} 个汉字、字母或数字"
                "(空白、标点和不可见字符不计)",
                clause="I.4",
            )
        ctx.policy_input["break_glass"] = {"reason": reason}
        ctx.audit_extra["break_glass_reason"] = reason
        if len(cleaned) > MAX_REASON:
            ctx.audit_extra["break_glass_reason_truncated"] = True

    async def explain_facts(
        self, ctx: RequestContext, patients: set[str], given: dict[str, dict[str, Any]]
    ) -> None:
        await self.before_decision(ctx)  # explain's reason is judged like a real request's


PLUGIN = BreakGlassPlugin
