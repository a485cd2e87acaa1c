"""Policy Decision Point client: one interface, two engines, the same `opa_policies/`.

- ``opa``: a real OPA server over its REST API (production, several replicas, bundle service).
- ``embedded``: the same Rego evaluated in-process (one machine, no extra service).

Both answer two questions per request (never one per resource; see opa_policies/README.md):
``data.emr.request.decision`` before forwarding, ``data.emr.response.decision`` over every resource
that comes back. Anything but a well-formed answer raises :class:`PolicyError`, and the pipeline
fails closed on it: no decision, no data.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from gateway.errors import Reason
from gateway.policy.decisions import RequestDecision, ResponseDecision, Verdict

if TYPE_CHECKING:
    from gateway.policy.cache import DecisionCache

REQUEST_DECISION = "emr/request/decision"
RESPONSE_DECISION = "emr/response/decision"


#: Obligation types the gateway knows how to carry out: "alert" (II.3, committed with the audit).
SUPPORTED_OBLIGATIONS: frozenset[str] = frozenset({"alert"})


#: Field operations the response filter carries out (gateway/fhir/transforms.py).
KNOWN_TRANSFORMS: frozenset[str] = frozenset({"year", "drop_reference_display", "keep_only"})


class PolicyError(RuntimeError):
    """The engine failed, timed out or gave an undefined or malformed result."""


def _check_obligations(engine: str, obligations: Any, allow: bool) -> list[dict[str, Any]]:
    if not isinstance(obligations, list):
        raise PolicyError(f"{engine} engine: obligations are not an array")
    unknown = [o for o in obligations if not (isinstance(o, dict) and o.get("type") in SUPPORTED_OBLIGATIONS)]
    if allow and unknown:
        # An obligation the gateway cannot carry out (a watermark, say) must not be silently
        # dropped: the allow is void.
        raise PolicyError(f"{engine} engine: obligations not supported by this gateway: {str(unknown)[:200]}")
    return [o for o in obligations if o not in unknown]


class PolicyEngine(ABC):
    name: str = "abstract"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.revision = "unknown"
        #: The decision cache of this engine's answers (gateway/policy/cache.py), made and sized by
        #: gateway/decide.py on first use; keyed by ``revision``.
        self.cache: DecisionCache | None = None

    @property
    def revision_pinned(self) -> bool:
        """Whether every answer comes from exactly the policy ``revision`` names, so that answers
        may be cached under it. The embedded engine computes the revision from the modules it
        loads, in the same step; an OPA server can be given other policies (a bundle, a PUT) behind
        the gateway's back, and its revision is read only at start-up: not pinned."""
        return self.name == "embedded"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load policies / open connections."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    @abstractmethod
    async def ready(self) -> bool:
        """True when decisions can be made now (for /readyz)."""

    @abstractmethod
    async def _evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        """Evaluate ``data.<path>`` for ``input_doc``; None when undefined."""

    async def evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        try:
            result = await asyncio.wait_for(self._evaluate(path, input_doc), self.timeout)
        except PolicyError:
            raise
        except TimeoutError:
            raise PolicyError(f"{self.name} engine: no decision for {path} within {self.timeout}s") from None
        except Exception as exc:  # any engine fault is a refusal, never an allow
            raise PolicyError(f"{self.name} engine: {type(exc).__name__}: {exc}") from exc
        if result is None:
            raise PolicyError(
                f"{self.name} engine: data.{path.replace('/', '.')} is undefined for this input"
            )
        return result

    async def decide_request(self, input_doc: dict[str, Any]) -> RequestDecision:
        return self.request_decision(await self.evaluate(REQUEST_DECISION, input_doc))

    async def decide_response(self, input_doc: dict[str, Any]) -> ResponseDecision:
        """One verdict per ``input.entries`` item, in order, and the decision's obligations."""
        raw = await self.evaluate(RESPONSE_DECISION, input_doc)
        return self.response_decision(raw, len(input_doc.get("entries", ())))

    def request_decision(self, raw: Any) -> RequestDecision:
        """The typed request decision of a raw answer; PolicyError if it is malformed."""
        if not isinstance(raw, dict) or not isinstance(raw.get("allow"), bool):
            raise PolicyError(
                f"{self.name} engine: request decision has no boolean 'allow': {str(raw)[:200]}"
            )
        reasons = raw.get("reasons") or []
        obligations = raw.get("obligations") or []
        if not isinstance(reasons, list) or not isinstance(obligations, list):
            raise PolicyError(f"{self.name} engine: request decision reasons/obligations are not arrays")
        unknown = [
            o for o in obligations if not (isinstance(o, dict) and o.get("type") in SUPPORTED_OBLIGATIONS)
        ]
        if raw["allow"] and unknown:
            # An obligation the gateway cannot carry out (a watermark, an alert) must not be
            # silently dropped: the allow is void.
            raise PolicyError(
                f"{self.name} engine: obligations not supported by this gateway: {str(unknown)[:200]}"
            )
        return RequestDecision(
            raw["allow"],
            [Reason.from_policy(r) for r in reasons],
            obligations,
            self._valid_until(raw),
        )

    def response_decision(self, raw: Any, entries: int) -> ResponseDecision:
        """The typed response decision of a raw answer for ``entries`` entries; PolicyError if it
        is malformed (one verdict per entry, each with a boolean ``keep``, known transforms)."""
        verdicts = raw.get("verdicts") if isinstance(raw, dict) else None
        if not isinstance(verdicts, list) or len(verdicts) != entries:
            raise PolicyError(
                f"{self.name} engine: response decision must hold one verdict per entry "
                f"({entries}), got {str(raw)[:200]}"
            )
        for v in verdicts:
            if not isinstance(v, dict) or not isinstance(v.get("keep"), bool):
                raise PolicyError(f"{self.name} engine: malformed verdict {str(v)[:200]}")
            unknown = [
                t
                for t in v.get("transform") or []
                if not isinstance(t, dict) or t.get("op") not in KNOWN_TRANSFORMS
            ]
            if unknown:  # a withholding the gateway cannot carry out must not be skipped
                raise PolicyError(f"{self.name} engine: unknown transform {str(unknown)[:200]}")
        typed: list[Verdict] = verdicts  # checked above: each has a boolean "keep"
        assert isinstance(raw, dict)
        return ResponseDecision(
            typed,
            _check_obligations(self.name, raw.get("obligations") or [], True),
            self._valid_until(raw),
        )

    def _valid_until(self, raw: dict[str, Any]) -> str | None:
        """Until when the decision holds (RFC 3339), None for no time boundary; a policy that says
        nothing about it (an older policy) answers None too, and is never cached (cache.py)."""
        until = raw.get("valid_until")
        if until is not None and not isinstance(until, str):
            raise PolicyError(f"{self.name} engine: valid_until is not a string: {str(until)[:100]}")
        return until
