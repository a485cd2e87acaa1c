"""The contract between the core and the controls of the notice (plugins/).

The core knows HTTP and FHIR; each package in ``plugins/`` implements one control of
国卫办医政函〔2025〕262号 beside its Rego package (``plugins/seal/`` ↔ ``opa_policies/emr/seal/``):
its request hooks, its admin routes and its tables. The configured ones are named in
``plugins = [...]``; those the gateway cannot be safe without (:data:`REQUIRED_PLUGINS`) always load,
first.

Order of hooks on one request (gateway/pipeline.py reads top to bottom):

1. ``before_decision`` — after authentication and parsing; add facts to the policy input.
   **May run more than once**: a write whose result reaches more patients or removes labels is
   decided again (plugins/write_guard), and every hook runs again first. Hooks must be idempotent.
2. request decision
3. ``before_forward`` — the request is allowed; last word before the upstream sees it. Returns
   headers to add to the forwarded request. Runs once.
4. upstream, then ``after_upstream`` — the upstream's answer, before anything is judged. Runs once.
5. ``before_response_decision`` — facts about patients first seen in what came back. **May run
   more than once** (a write's pre-read is judged too); must be idempotent.
6. response decision and filter
7. ``before_release`` — the body is final apart from what this hook adds (a watermark). Runs once.
8. audit record (committed), response.

``explain_facts`` serves ``POST /admin/policy/explain``: the facts ``before_decision`` would add,
taken from the store or the explain body, never from the upstream.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from gateway.context import RequestContext

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.proxy import UpstreamResponse
    from gateway.runtime import Gateway

#: Controls that were part of the gateway before it had plugins, and without which it is not safe
#: (write governance) or loses an interface hospitals script against (explain, audit export,
#: alerts): always loaded, whatever ``plugins`` says.
REQUIRED_PLUGINS = ("write_guard", "explain", "balp", "alerts")
#: Old plugin names that still work, with a deprecation warning at start-up.
RENAMED_PLUGINS = {"patient_context": "care"}


@dataclass(frozen=True)
class AdminRoute:
    """One admin endpoint a control adds under ``/admin`` (gateway/admin.py mounts it, audited)."""

    method: str
    path: str  # below /admin, e.g. "/seals"
    action: str  # the audit record's extra.admin.action, e.g. "admin.seal"
    clause: str  # the notice's clause the endpoint serves
    roles: Callable[[Settings], tuple[str, ...]] | None  # None: anyone authenticated
    handler: Callable[..., Awaitable[Any]]  # (request, ctx, gw, call) -> Reply


class Plugin:
    """Base class of a control: every hook is optional."""

    name: ClassVar[str] = "plugin"
    #: Tables this control keeps (``CREATE ... IF NOT EXISTS``), created at start-up.
    schema: ClassVar[str] = ""

    async def start(self, gw: Gateway) -> None:
        """Called once at start-up with the gateway's parts (store, settings, engine, upstream)."""

    async def close(self) -> None:
        """Called once at shutdown (also after a start-up that failed later on)."""

    def admin_routes(self) -> list[AdminRoute]:
        return []

    async def before_decision(self, ctx: RequestContext) -> None:
        """Enrich ``ctx`` before the request decision. May run more than once: be idempotent."""

    async def before_forward(self, ctx: RequestContext) -> dict[str, str]:
        """The request is allowed; raise GatewayError to stop it. Headers to add upstream."""
        return {}

    async def after_upstream(self, ctx: RequestContext, upstream: UpstreamResponse) -> None:
        """The upstream's answer, before it is judged."""

    async def before_response_decision(self, ctx: RequestContext, patients: set[str]) -> None:
        """Facts about ``patients`` (first seen in a response) before it is judged. Idempotent."""

    async def before_release(self, ctx: RequestContext, body: Any) -> None:
        """Last look at the filtered body before it is audited and released (may modify it)."""

    async def explain_facts(
        self, ctx: RequestContext, patients: set[str], given: dict[str, dict[str, Any]]
    ) -> None:
        """For explain: the facts ``before_decision`` would add, without calling the upstream."""


class Hooks:
    """Runs one hook over every loaded plugin, in order."""

    def __init__(self, plugins: list[Plugin]) -> None:
        self.plugins = plugins

    async def before_decision(self, ctx: RequestContext) -> None:
        for plugin in self.plugins:
            await plugin.before_decision(ctx)

    async def before_forward(self, ctx: RequestContext) -> dict[str, str]:
        headers: dict[str, str] = {}
        for plugin in self.plugins:
            headers.update(await plugin.before_forward(ctx))
        return headers

    async def after_upstream(self, ctx: RequestContext, upstream: UpstreamResponse) -> None:
        for plugin in self.plugins:
            await plugin.after_upstream(ctx, upstream)

    async def before_response_decision(self, ctx: RequestContext, patients: set[str]) -> None:
        for plugin in self.plugins:
            await plugin.before_response_decision(ctx, patients)

    async def before_release(self, ctx: RequestContext, body: Any) -> None:
        for plugin in self.plugins:
            await plugin.before_release(ctx, body)

    async def explain_facts(
        self, ctx: RequestContext, patients: set[str], given: dict[str, dict[str, Any]]
    ) -> None:
        for plugin in self.plugins:
            await plugin.explain_facts(ctx, patients, given)


def plugin_names(configured: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """The plugins to load, in order, and warnings: the required ones first (write governance hashes
    a write's body before any other hook can refuse it, so a refused write is audited with its
    hash), then the configured ones."""
    names: list[str] = []
    warnings: list[str] = []
    for name in configured:
        if name in RENAMED_PLUGINS:
            new = RENAMED_PLUGINS[name]
            warnings.append(f"config key 'plugins': '{name}' is now called '{new}'; please rename it")
            name = new
        if name not in names:
            names.append(name)
    return [*REQUIRED_PLUGINS, *(n for n in names if n not in REQUIRED_PLUGINS)], warnings


def load_plugins(names: list[str]) -> list[Plugin]:
    """Instantiate ``plugins.<name>.PLUGIN`` for each name, in order."""
    loaded: list[Plugin] = []
    for name in names:
        try:
            module = importlib.import_module(f"plugins.{name}")
        except ModuleNotFoundError as exc:
            if exc.name not in ("plugins", f"plugins.{name}"):
                raise
            from gateway.config import ConfigError

            raise ConfigError(f"config key 'plugins': no plugin named '{name}' (plugins/{name}/)") from exc
        loaded.append(module.PLUGIN())
    return loaded
