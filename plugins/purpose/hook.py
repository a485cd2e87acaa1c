"""Purpose of use (I.2): EMR information may be used only for medical care, teaching or research.

This plugin only *establishes* the purpose the operator claims, from the ``X-Purpose-Of-Use``
header or else the token's purpose claim, as an HL7 v3 PurposeOfUse code. Whether that purpose is
allowed for this operator and this request is the policy's call (opa_policies/emr/request), so a
missing or unknown purpose reaches the policy as such and is refused there, citing I.2.
"""

from __future__ import annotations

import re

from gateway.auth import claim
from gateway.context import RequestContext
from gateway.errors import error
from gateway.hooks import Plugin
from gateway.runtime import Gateway

#: The rule id this control refuses with (OperationOutcome, audit record).
MALFORMED = "purpose.malformed"

HEADER = "X-Purpose-Of-Use"
# PurposeOfUse codes are short upper-case tokens (TREAT, ETREAT, HRESCH, ...); a system may prefix
# them as "system|code" -- only the code is used.
CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$")


class PurposePlugin(Plugin):
    name = "purpose"

    def __init__(self) -> None:
        self.claim_name = "purpose_of_use"

    async def start(self, gw: Gateway) -> None:
        self.claim_name = gw.settings.purpose_claim

    async def before_decision(self, ctx: RequestContext) -> None:
        raw = ctx.headers.get(HEADER)
        source = "header"
        if not raw and ctx.operator is not None:
            value = claim(ctx.operator.claims, self.claim_name)
            raw = value[0] if isinstance(value, list) and value else value
            source = "token"
        if not raw:
            ctx.purpose = None  # the policy refuses it, citing I.2
            return
        code = str(raw).rsplit("|", 1)[-1].strip()
        if not CODE_RE.match(code):
            raise error(
                status=400,
                code="invalid",
                rule=MALFORMED,
                en=f"purpose of use '{str(raw)[:40]}' is not a PurposeOfUse code (e.g. TREAT, TRAIN, HRESCH)",
                zh=f"使用目的“{str(raw)[:40]}”不是有效的 PurposeOfUse 代码(如 TREAT、TRAIN、HRESCH)",
                clause="I.2",
            )
        ctx.purpose = code.upper()
        ctx.audit_extra["purpose_source"] = source


PLUGIN = PurposePlugin
