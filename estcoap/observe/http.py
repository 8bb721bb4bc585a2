"""The operations listener (`--metrics HOST:PORT`): /metrics, /healthz and /readyz.

* /metrics: the Prometheus text exposition of the process's registry (metrics.py),
  rendered in a worker thread: the values read at scrape time query the store.
* /healthz: 200 while the process answers at all (its event loop turns).
* /readyz: 200 when every readiness check passes, else 503; the JSON body names each
  check and, for a failed one, what is wrong. A check that does not answer within
  CHECK_TIMEOUT seconds fails.

Plain HTTP on purpose, as Prometheus and orchestrators expect: bind it to an address
only they reach. Nothing secret is served (no subjects, no addresses of peers).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import Metrics

CHECK_TIMEOUT = 5.0

# A readiness check: returns None when ready, raises with what is wrong otherwise.
Check = Callable[[], Awaitable[None]]


def in_thread(check: Callable[[], object]) -> Check:
    """A blocking check (a store write, a signature) run off the event loop."""

    async def run() -> None:
        await asyncio.to_thread(check)

    return run


def ops_app(metrics: Metrics, checks: Mapping[str, Check]) -> web.Application:
    app = web.Application()

    async def scrape(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def alive(_: web.Request) -> web.Response:
        return _json(200, {"status": "alive"})

    async def ready(_: web.Request) -> web.Response:
        results = await asyncio.gather(*(_run(check) for check in checks.values()))
        report = dict(zip(checks, results, strict=True))
        problems = {name: why for name, why in report.items() if why != "ok"}
        body: dict[str, object] = {"status": "ready" if not problems else "not ready"}
        body["checks"] = report
        return _json(200 if not problems else 503, body)

    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", alive)
    app.router.add_get("/readyz", ready)
    return app


async def _run(check: Check) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check()
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        text = str(exc).replace("\n", " ") or type(exc).__name__
        return text[:300]
    return "ok"


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body, indent=1) + "\n", content_type="application/json"
    )


@dataclass
class OpsServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_ops_server(
    host: str, port: int, metrics: Metrics, checks: Mapping[str, Check]
) -> OpsServer:
    """Listen on host:port (0: a free port, see .port)."""
    runner = web.AppRunner(ops_app(metrics, checks), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return OpsServer(runner, host, int(runner.addresses[0][1]))
