"""The gateway's long-lived parts, built from Settings, started and stopped together."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.audit import AuditLog
from gateway.audit_forward import AuditForwarder
from gateway.auth import TokenVerifier
from gateway.config import Settings
from gateway.fhir.transforms import Pseudonymiser
from gateway.plugin import Plugin, load_plugins
from gateway.policy import PolicyEngine
from gateway.proxy import UpstreamClient
from gateway.store import Store


def make_engine(settings: Settings) -> PolicyEngine:
    if settings.policy_engine == "opa":
        from gateway.policy.opa_server import OpaServerEngine

        return OpaServerEngine(settings.opa_url, settings.policy_timeout_seconds)
    from gateway.policy.embedded import EmbeddedEngine

    return EmbeddedEngine(settings.policy_dir, settings.policy_timeout_seconds)


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
    forwarder: AuditForwarder | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        store = Store(settings.db)
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
            plugins=load_plugins(settings.plugins),
            pseudonymiser=Pseudonymiser(settings.pseudonym_secret) if settings.pseudonym_secret else None,
            forwarder=AuditForwarder(store, settings.audit_forward_url, settings.audit_forward_authorization)
            if settings.audit_forward_url
            else None,
        )

    async def start(self) -> None:
        await self.store.start()
        self.audit.start()
        if self.forwarder is not None:
            await self.forwarder.start()
        await self.upstream.start()
        if not self.settings.bare_passthrough:
            await self.verifier.start()
            await self.engine.start()
            for plugin in self.plugins:
                await plugin.start(self)

    async def close(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.close()
        for plugin in reversed(self.plugins):
            await plugin.close()
        await self.engine.close()
        await self.verifier.close()
        await self.upstream.close()
        await self.audit.close()
        await self.store.close()

    async def readiness(self) -> dict[str, bool]:
        checks = {"upstream": await self.upstream.ready(), "store": await self.store.ready()}
        if not self.settings.bare_passthrough:
            checks["policy_engine"] = await self.engine.ready()
            checks["operator_keys"] = await self.verifier.keys.ready()
        return checks
