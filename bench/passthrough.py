"""The floor of this stack for `make bench`: the gateway's own upstream client and URL rewriting
behind aiohttp, with no authentication, policy, filter, watermark or audit. Never a product mode:
it lives here, outside the package, so no setting of the gateway can switch its controls off.

    python -m bench.passthrough --listen 127.0.0.1:8081 --upstream http://127.0.0.1:8090/fhir/R4
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from gateway.config import Settings
from gateway.errors import GatewayError, operation_outcome
from gateway.proxy import FHIR_JSON, UpstreamClient, rewrite_urls

UPSTREAM = web.AppKey("upstream", UpstreamClient)


async def pass_through(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8"}
    try:
        raw = await request.read() if request.body_exists else b""
        answer = await upstream.send(
            request.method, request.match_info["tail"], request.query_string, request.headers, raw, "bench"
        )
    except GatewayError as err:
        return web.Response(
            status=err.status, body=orjson.dumps(operation_outcome(err, "bench")), headers=headers
        )
    rewrite_urls(answer.body, upstream.base, f"{request.scheme}://{request.host}/fhir")
    body = orjson.dumps(answer.body) if answer.body is not None else b""
    return web.Response(status=answer.status, body=body, headers={**dict(answer.headers), **headers})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(upstream_url: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = UpstreamClient(Settings(upstream_url=upstream_url))

    async def upstream_client(app: web.Application) -> AsyncIterator[None]:
        await app[UPSTREAM].start()
        yield
        await app[UPSTREAM].close()

    app.cleanup_ctx.append(upstream_client)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/fhir/{tail:.*}", pass_through)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:8081")
    ap.add_argument("--upstream", required=True)
    args = ap.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    web.run_app(make_app(args.upstream), host=host, port=int(port), print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
