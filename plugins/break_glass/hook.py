"""Break-the-glass (I.4, II.3): an emergency reason lets a clinician reach a patient outside the
care relationship — each time said, audited and alerted, never into a sealed record.

This plugin only carries the reason from the ``X-Break-Glass-Reason`` header into the policy input
(``break_glass``); the policy decides whether it waives the care relationship (purpose ETREAT or
BTG, a clinical role) and asks for the alert, which the gateway commits with the audit record.
"""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.errors import error
from gateway.hooks import Plugin

#: The rule id this control refuses with (OperationOutcome, audit record).
NO_REASON = "break-glass.no-reason"

HEADER = "X-Break-Glass-Reason"
MAX_REASON = 500


class BreakGlassPlugin(Plugin):
    name = "break_glass"

    async def before_decision(self, ctx: RequestContext) -> None:
        raw = ctx.headers.get(HEADER)
        if raw is None:
            return
        # Headers are latin-1 on the wire: a UTF-8 reason (Chinese) arrives as mojibake. Undo it.
        try:
            reason = raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            reason = raw
        reason = " ".join(reason.split())[:MAX_REASON]
        if not reason:
            raise error(
                status=400,
                code="invalid",
                rule=NO_REASON,
                en=f"{HEADER} is empty: say why this emergency access is needed",
                zh=f"{HEADER} 为空:请说明紧急访问的理由",
                clause="I.4",
            )
        ctx.policy_input["break_glass"] = {"reason": reason}
        ctx.audit_extra["break_glass_reason"] = reason


PLUGIN = BreakGlassPlugin
