"""Refusals and failures as FHIR ``OperationOutcome`` resources, in Chinese and English.

Every refusal names the rule that fired and, where the rule comes from the notice
(国卫办医政函〔2025〕262号), its clause id, plus the request id that finds the audit record.
A ward nurse's IT desk reads the Chinese text; an auditor follows the rule code and request id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RULE_SYSTEM = "https://emrguard.example/fhir/CodeSystem/rule"
CLAUSE_SYSTEM = "https://emrguard.example/fhir/CodeSystem/notice-262-clause"


@dataclass(frozen=True)
class Reason:
    """Why something was refused (or allowed): a rule id, the clause it enforces, zh + en text.

    ``en`` and ``zh`` are shown to the requester and name only what the requester sent. ``detail``
    holds the specifics a policy knows and the requester must not learn (the patient of a record
    read by id, a seal's case, a grant id, a record's grade): it is kept in the audit record
    (:meth:`as_dict`) and never rendered (:func:`operation_outcome`).
    """

    rule: str
    en: str
    zh: str
    clause: str = ""
    detail: Any = field(default=None, hash=False)

    def as_dict(self) -> dict[str, Any]:
        """The reason for the audit record: with its ``detail`` when it has one."""
        out: dict[str, Any] = {"rule": self.rule, "clause": self.clause, "en": self.en, "zh": self.zh}
        if self.detail is not None:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_policy(cls, raw: Any) -> Reason:
        """Policies return reasons as objects; tolerate a bare string from a hand-written rule."""
        if isinstance(raw, dict):
            return cls(
                rule=str(raw.get("rule", "policy")),
                en=str(raw.get("en", raw.get("rule", ""))),
                zh=str(raw.get("zh", raw.get("en", ""))),
                clause=str(raw.get("clause", "")),
                detail=raw.get("detail"),
            )
        return cls(rule="policy", en=str(raw), zh=str(raw))


@dataclass
class GatewayError(Exception):
    """An error that ends the request with an OperationOutcome; raised anywhere in the pipeline."""

    status: int
    code: str  # FHIR issue-type code: forbidden, login, invalid, not-supported, timeout, ...
    reasons: list[Reason] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    #: The request element that is wrong (``issue.expression`` of the first issue), if one is.
    expression: str = ""

    def __str__(self) -> str:
        return "; ".join(f"{r.rule}: {r.en}" for r in self.reasons) or self.code


def error(
    *,
    status: int,
    code: str,
    rule: str,
    en: str,
    zh: str,
    clause: str = "",
    headers: dict[str, str] | None = None,
    expression: str = "",
) -> GatewayError:
    """One refusal: HTTP status, FHIR issue code, the rule id (gateway/rules.py), zh + en text."""
    return GatewayError(status, code, [Reason(rule, en, zh, clause)], dict(headers or {}), expression)


def shown(reasons: list[Reason]) -> list[Reason]:
    """The reasons a refusal shows. A reason whose detail says ``discreet`` (a seal: that the patient
    is sealed is itself a fact about them) is shown only when it is the sole reason — to someone who
    would otherwise have had access; beside another refusal (no care relationship) it would tell any
    insider who is under seal (red team). Every reason stays in the audit record."""
    plain = [r for r in reasons if not (isinstance(r.detail, dict) and r.detail.get("discreet") is True)]
    return plain or reasons


def operation_outcome(err: GatewayError, request_id: str) -> dict[str, Any]:
    """Render a GatewayError; one issue per reason: its rule, clause, zh + en text and the request
    id, never its ``detail`` (what the requester must not learn stays in the audit record)."""
    issues = []
    for r in err.reasons or [Reason("error", err.code, err.code)]:
        clause = f" [{r.clause}]" if r.clause else ""
        coding = [{"system": RULE_SYSTEM, "code": r.rule, "display": r.en}]
        if r.clause:
            coding.append({"system": CLAUSE_SYSTEM, "code": r.clause})
        issues.append(
            {
                "severity": "error",
                "code": err.code,
                "details": {"coding": coding, "text": f"{r.zh}{clause} / {r.en}{clause}"},
                "diagnostics": f"rule={r.rule} clause={r.clause or '-'} request_id={request_id}",
            }
        )
    if err.expression:
        issues[0]["expression"] = [err.expression]
    return {"resourceType": "OperationOutcome", "issue": issues}
