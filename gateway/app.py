"""The aiohttp application: the gateway's parts started and stopped together, and its routes; every
request passes the edge (gateway/edge.py) first."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.admin import add_admin_routes
from gateway.audit.admin import ROUTES as AUDIT_ROUTES
from gateway.config import Settings
from gateway.decide import decision_cache
from gateway.edge import HEALTH_PATHS, edge, parser_limits
from gateway.pipeline import FHIR_PREFIX, handle_fhir
from gateway.runtime import GATEWAY, Gateway


async def healthz(request: web.Request) -> web.Response:
    """The process is up (liveness)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Upstream FHIR server, policy engine, operator keys and store all reachable (readiness), and
    the store able to commit (II.2): while it cannot, 503 naming it (``"store": "cannot commit:
    database is locked"``), with the records waiting in the backlog and the count of records lost."""
    gw = request.app[GATEWAY]
    checks = await gw.readiness()
    ok = all(checks.values())
    body: dict[str, object] = {
        "status": "ready" if ok else "not ready",
        "checks": checks,
        **gw.store.health(),
    }
    if gw.audit.checkpointer is not None and gw.audit.checkpointer.failing:
        body["audit_checkpoints"] = f"cannot write the checkpoint file: {gw.audit.checkpointer.failing}"
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Counters in the Prometheus text format: the decision cache's hits, misses, expiries and size
    (gateway/policy/cache.py). Nothing about a patient, an operator or a policy's content."""
    return web.Response(
        body=decision_cache(request.app[GATEWAY]).metrics().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8", "Cache-Control": "no-store"},
    )


def create_app(settings: Settings, gateway: Gateway | None = None) -> web.Application:
    gw = gateway or Gateway.from_settings(settings)
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        middlewares=[edge],
        # On the application, not the runner: every server of this app (emrguard serve, the tests'
        # aiohttp_client) parses with these limits.
        handler_args=parser_limits(gw.settings),
    )
    app[GATEWAY] = gw

    async def parts(app: web.Application) -> AsyncIterator[None]:
        async with gw.running():  # each part unwinds on its own if a later one fails to start
            yield

    app.cleanup_ctx.append(parts)
    app.router.add_get(HEALTH_PATHS[0], healthz)
    app.router.add_get(HEALTH_PATHS[1], readyz)
    app.router.add_get(HEALTH_PATHS[2], metrics)
    app.router.add_route("*", FHIR_PREFIX, handle_fhir)
    # [\s\S]: a newline in the path must reach the handler (and be refused and audited there),
    # not fall through to the edge's 404.
    app.router.add_route("*", FHIR_PREFIX + "/{tail:[\\s\\S]*}", handle_fhir)
    add_admin_routes(app, AUDIT_ROUTES + [r for p in gw.plugins for r in p.admin_routes()])
    return app
