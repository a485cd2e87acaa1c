"""The gateway's long-lived parts, built from Settings: the typed runtime every hook receives.

Start-up opens the parts one by one on an exit stack, so a failure halfway closes what was already
opened (in reverse order) before the error propagates; shutdown closes them the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from gateway.audit.log import AuditLog
from gateway.auth import TokenVerifier
from gateway.config import Settings
from gateway.fhir.pseudonyms import Pseudonymiser
from gateway.hooks import Hooks, Plugin, load_plugins, plugin_names
from gateway.paging import Pager
from gateway.policy import PolicyEngine
from gateway.policy.files import policy_dir
from gateway.proxy import UpstreamClient
from gateway.store import Store

log = structlog.get_logger("emrguard.runtime")
#: One part of the gateway: its name, how it starts, how it closes.
Part = tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]


def make_engine(settings: Settings) -> PolicyEngine:
    if settings.policy_engine == "opa":
        from gateway.policy.opa_server import OpaServerEngine

        return OpaServerEngine(settings.opa_url, settings.policy_timeout_seconds)
    from gateway.policy.embedded import EmbeddedEngine

    return EmbeddedEngine(policy_dir(settings.policy_dir), settings.policy_timeout_seconds)


@dataclass
class Gateway:
    settings: Settings
    verifier: TokenVerifier
    engine: PolicyEngine
    upstream: UpstreamClient
    store: Store
    audit: AuditLog
    plugins: list[Plugin] = field(default_factory=list)
    pseudonymiser: Pseudonymiser | None = None
    pager: Pager = field(init=False)
    hooks: Hooks = field(init=False)

    def __post_init__(self) -> None:
        self.hooks = Hooks(self.plugins)
        # The cursor key is derived from the pseudonym secret (required, at least 32 characters).
        self.pager = Pager(self.settings.pseudonym_secret, self.settings.paging_cursor_ttl_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        names, warnings = plugin_names(settings.plugins)
        for warning in warnings:
            log.warning("deprecated_setting", detail=warning)
        plugins = load_plugins(names)
        store = Store(
            settings.db,
            [p.schema for p in plugins if p.schema],
            busy_timeout=settings.store_busy_timeout_seconds,
            backlog_max=settings.audit_backlog_max,
            spill_file=settings.audit_spill_file,
        )
        return cls(
            settings=settings,
            verifier=TokenVerifier(settings),
            engine=make_engine(settings),
            upstream=UpstreamClient(settings),
            store=store,
            audit=AuditLog(
                store,
                settings.audit_log,
                (
                    settings.audit_signing_key_file,
                    settings.audit_checkpoint_file,
                    settings.audit_checkpoint_interval_seconds,
                )
                if settings.audit_signing_key_file
                else None,
            ),
            plugins=plugins,
            pseudonymiser=Pseudonymiser(settings.pseudonym_secret) if settings.pseudonym_secret else None,
        )

    def _parts(self) -> list[Part]:
        """(name, start, close) in start-up order: the store first (nothing is served unaudited)."""
        parts: list[Part] = [
            ("store", self.store.start, self.store.close),
            ("audit", self.audit.start, self.audit.close),
            ("upstream", self.upstream.start, self.upstream.close),
            ("operator keys", self.verifier.start, self.verifier.close),
            ("policy engine", self.engine.start, self.engine.close),
        ]
        for plugin in self.plugins:
            parts.append((f"plugin {plugin.name}", _bind_start(plugin, self), plugin.close))
        return parts

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Every part started, in order; on exit (or a failed start) the started ones closed."""
        async with contextlib.AsyncExitStack() as stack:
            for name, start, close in self._parts():
                try:
                    await start()
                except Exception:
                    log.error("start_failed", part=name)  # the parts already started close now
                    raise
                stack.push_async_callback(close)
            yield self

    async def readiness(self) -> dict[str, bool]:
        return {
            "upstream": await self.upstream.ready(),
            "store": await self.store.ready(),
            "policy_engine": await self.engine.ready(),
            "operator_keys": await self.verifier.keys.ready(),
            # Signed checkpoints (II.2): without them the newest records could go unnoticed.
            "audit_checkpoints": not (self.audit.checkpointer and self.audit.checkpointer.failing),
        }


def _bind_start(plugin: Plugin, gw: Gateway) -> Callable[[], Awaitable[None]]:
    async def start() -> None:
        await plugin.start(gw)

    return start


#: The gateway's runtime in the aiohttp application.
GATEWAY = web.AppKey("gateway", Gateway)
