"""The hooks a control of the notice plugs into. The core knows HTTP and FHIR; plugins know the
notice: each module in ``plugins/`` implements one control and is enabled by name in the config
(``plugins = ["purpose", ...]``).

Order of hooks on one request (gateway/pipeline.py reads top to bottom):
``before_decision`` (after authentication and parsing; add facts to the policy input) ->
request decision -> upstream -> ``before_response_decision`` (facts about the patients the
response holds) -> response decision and filter -> ``before_release`` (the body is
final apart from what this hook adds, e.g. a watermark) -> audit -> response.
"""

from __future__ import annotations

import importlib
from typing import Any

from gateway.context import RequestContext


class Plugin:
    """Base class: every hook is optional."""

    name = "plugin"

    async def start(self, app_state: Any) -> None:
        """Called once at start-up with the gateway (store, settings, engine)."""

    async def close(self) -> None:
        """Called once at shutdown."""

    async def before_decision(self, ctx: RequestContext) -> None:
        """Enrich ``ctx`` / ``ctx.policy_input`` before the request decision. Raise GatewayError to refuse."""

    async def before_response_decision(self, ctx: RequestContext, patients: set[str]) -> None:
        """Facts about patients first seen in the response (``ctx.patient_context``) before it is judged."""

    async def before_release(self, ctx: RequestContext, body: Any) -> None:
        """Last look at the filtered body before it is audited and released (may modify it in place)."""


def load_plugins(names: tuple[str, ...] | list[str]) -> list[Plugin]:
    """Instantiate ``plugins.<name>.PLUGIN`` for each configured name, in order."""
    loaded: list[Plugin] = []
    for name in names:
        try:
            module = importlib.import_module(f"plugins.{name}")
        except ModuleNotFoundError as exc:
            from gateway.config import ConfigError

            raise ConfigError(f"config key 'plugins': no plugin named '{name}' (plugins/{name}.py)") from exc
        loaded.append(module.PLUGIN())
    return loaded
