"""Typed decisions: what the policy answers (opa_policies/README.md is the contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from gateway.errors import Reason


class Transform(TypedDict, total=False):
    """A field operation of a verdict (gateway/fhir/transforms.py): ``op`` and its arguments."""

    op: str
    path: str
    fields: list[str]


class Verdict(TypedDict):
    """The response decision's verdict on one resource."""

    keep: bool
    grade: NotRequired[int]
    reasons: NotRequired[list[dict[str, Any]]]
    redact: NotRequired[list[str]]
    transform: NotRequired[list[Transform]]
    pseudonymise: NotRequired[bool]


@dataclass
class RequestDecision:
    allow: bool
    reasons: list[Reason] = field(default_factory=list)
    obligations: list[dict[str, Any]] = field(default_factory=list)
    #: Until when the decision holds (RFC 3339, exclusive): the first time boundary ahead that
    #: could change it (a grant's start or end); None: none ahead (opa_policies/README.md).
    valid_until: str | None = None


@dataclass
class ResponseDecision:
    verdicts: list[Verdict]
    obligations: list[dict[str, Any]] = field(default_factory=list)
    #: As for the request decision.
    valid_until: str | None = None
