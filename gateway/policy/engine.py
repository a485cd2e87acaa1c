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
from typing import Any

from gateway.errors import Reason
from gateway.policy.decisions import RequestDecision, ResponseDecision, Verdict

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
        raw = await self.evaluate(REQUEST_DECISION, input_doc)
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
        return RequestDecision(raw["allow"], [Reason.from_policy(r) for r in reasons], obligations)

    async def decide_response(self, input_doc: dict[str, Any]) -> ResponseDecision:
        """One verdict per ``input.entries`` item, in order, and the decision's obligations."""
        raw = await self.evaluate(RESPONSE_DECISION, input_doc)
        verdicts = raw.get("verdicts") if isinstance(raw, dict) else None
        if not isinstance(verdicts, list) or len(verdicts) != len(input_doc.get("entries", ())):
            raise PolicyError(
                f"{self.name} engine: response decision must hold one verdict per entry "
                f"({len(input_doc.get('entries', ()))}), got {str(raw)[:200]}"
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
        return ResponseDecision(typed, _check_obligations(self.name, raw.get("obligations") or [], True))
