"""Everything the gateway learns about one request on its way through the pipeline."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.auth import Operator
from gateway.errors import Reason
from gateway.fhir.request import FhirRequest

if TYPE_CHECKING:
    from aiohttp import web


@dataclass
class RequestContext:
    request_id: str
    method: str
    path: str
    query_string: str
    client_address: str | None
    user_agent: str | None
    headers: Any  # the incoming request's headers (CIMultiDictProxy)
    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)
    operator: Operator | None = None
    purpose: str | None = None
    fhir: FhirRequest | None = None
    #: The request body as received (a write's hash is audited, I.3).
    body: bytes = b""
    #: The request decision's input, as decided (plugins judge a write's pre-read with it).
    request_input: dict[str, Any] = field(default_factory=dict)
    #: Extra facts plugins put into the policy input (e.g. break_glass), by top-level key.
    policy_input: dict[str, Any] = field(default_factory=dict)
    #: The operator's grants from the store (II.1), as `subject.grants` in the policy input.
    grants: list[dict[str, Any]] = field(default_factory=list)
    #: Per-patient facts ("Patient/x" -> departments, care team, flags, seal), as `patients`.
    patient_context: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Alert events to commit with the audit record (II.3).
    alerts: list[dict[str, Any]] = field(default_factory=list)
    #: Grade of every resource the response decision judged, "Type/id" -> 1..5 (I.4).
    grades: dict[str, int] = field(default_factory=dict)
    decision: str = "none"  # allow | deny | none (never decided: unauthenticated, malformed, error)
    reasons: list[Reason] = field(default_factory=list)
    obligations: list[dict[str, Any]] = field(default_factory=list)
    policy_engine: str | None = None
    policy_revision: str | None = None
    upstream_status: int | None = None
    status: int = 0
    entries_returned: int = 0
    entries_dropped: int = 0
    entries_redacted: int = 0
    patients_disclosed: set[str] = field(default_factory=set)
    resources_disclosed: list[str] = field(default_factory=list)
    policy_ms: float = 0.0
    upstream_ms: float = 0.0
    #: Headers plugins add to the response (e.g. the watermark's disclosure id).
    response_headers: dict[str, str] = field(default_factory=dict)
    #: Plugin-specific facts to keep in the audit record (e.g. break-glass reason).
    audit_extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_request(cls, request: web.Request, path: str) -> RequestContext:
        """A new context with a fresh request id (gateway/audited.py makes one per request)."""
        ctx = cls(
            request_id=uuid.uuid4().hex,
            method=request.method,
            path=path,
            query_string=request.query_string,
            client_address=request.remote,
            user_agent=request.headers.get("User-Agent"),
            headers=request.headers,
        )
        # A client-supplied id could collide with another record; ours is unique, theirs is kept too.
        if "X-Request-Id" in request.headers:
            ctx.audit_extra["client_request_id"] = (
                request.headers["X-Request-Id"][:128].encode("utf-8", "replace").decode()
            )
        return ctx

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def decision_input(self, now_iso: str) -> dict[str, Any]:
        """The request decision's input (opa_policies/README.md documents every field)."""
        assert self.operator is not None and self.fhir is not None
        doc: dict[str, Any] = {
            "subject": {**self.operator.to_policy(), "grants": self.grants},
            "purpose": self.purpose,
            "break_glass": None,
            "time": now_iso,
            "request_id": self.request_id,
            **self.fhir.to_policy(),
            "patients": self.patient_context,
        }
        doc.update(self.policy_input)
        return doc
