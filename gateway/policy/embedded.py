"""The ``embedded`` engine: the same `opa_policies/` evaluated in-process by regorus.

regorus (gordon-to-regorus, a maintained fork of microsoft/regorus, a Rego interpreter in Rust)
was chosen by measurement; the numbers and the alternatives (regopy, opa-py-wasm) are in
opa_policies/README.md. It holds the GIL while it evaluates (0.1-0.3 ms), which is why the
engine evaluates inline on the event loop rather than paying a thread hand-off per decision.
CI proves it decides exactly like a real OPA server (tests/gateway/policy/test_parity.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import regorus

from gateway.policy.engine import PolicyEngine, PolicyError
from gateway.policy.files import policy_data, policy_modules, revision_of


class EmbeddedEngine(PolicyEngine):
    name = "embedded"

    def __init__(self, policy_dir: str | Path, timeout: float) -> None:
        super().__init__(timeout)
        self.policy_dir = Path(policy_dir)
        self._engine: Any = None

    async def start(self) -> None:
        self.load()

    def load(self) -> None:
        """Compile the policy directory; a broken policy stops start-up rather than deciding wrongly."""
        modules = policy_modules(self.policy_dir)
        data = policy_data(self.policy_dir)
        engine = regorus.Engine()
        try:
            for name, text in modules.items():
                engine.add_policy(name, text)
            engine.add_data_json(orjson.dumps(data).decode())
        except Exception as exc:  # regorus raises plain exceptions with the parse error
            raise PolicyError(f"embedded engine: cannot load {self.policy_dir}: {exc}") from exc
        self._engine = engine
        self.revision = revision_of(modules, data.get("emr", {}).get("config"))

    async def close(self) -> None:
        # regorus engines are "unsendable": drop ours on the loop thread that made it, not in
        # whichever thread the garbage collector happens to run.
        self._engine = None

    async def ready(self) -> bool:
        return self._engine is not None

    async def _evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        engine = self._engine
        if engine is None:
            raise PolicyError("embedded engine: policies not loaded")
        # No await between setting the input and evaluating: on one event loop nothing else can
        # touch the engine in between, so one engine instance serves all requests.
        try:
            engine.set_input_json(orjson.dumps(input_doc).decode())
            return engine.eval_rule("data." + path.replace("/", "."))
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            raise
        except BaseException as exc:  # pyo3 panics are BaseException; any fault is a refusal
            # A builtin error (e.g. a malformed timestamp) fails the whole evaluation here, where OPA
            # would make one expression undefined: stricter, and still a refusal, never an allow.
            raise PolicyError(
                f"embedded engine: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
