"""The operations endpoint on the worker's own event loop: /metrics, /healthz, /readyz.

- `/healthz` (liveness): 200 whenever the event loop answers. A blocked loop can't answer, so
  the probe times out; a crashed worker has exited. The body gives the last loop lag seen.
- `/readyz` (readiness): 200 once the clients are built, the control records checked and the
  SQS consumer has had a receive answered, as long as its last receive succeeded; 503 before
  that, and from the moment a stop signal arrives (draining).
- `/metrics`: the Prometheus text format (worker.metrics; every metric in docs/operations.md).

Nothing here says anything about a user: bodies hold states, counts and seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .logs import get_logger
from .metrics import Metrics

log = get_logger("userstore.probes")

_LOOP_TICK_S = 1.0


@dataclass
class Readiness:
    """What /readyz reports. The runner and the consumer update it; nothing here does I/O."""

    started: bool = False  # clients built, controls checked, consumer configured
    receiving: Callable[[], bool] = field(default=lambda: False)  # the consumer's last receive ok
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def state(self) -> tuple[bool, str]:
        if self.stopping.is_set():
            return False, "draining"
        if not self.started:
            return False, "starting"
        if not self.receiving():
            return False, "not receiving"
        return True, "ready"


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


class _LoopWatch:
    """Measures how late a 1-second timer fires: a loop blocked by synchronous work shows."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.lag_s = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(_LOOP_TICK_S)
            self.lag_s = max(0.0, loop.time() - before - _LOOP_TICK_S)
            self._metrics.loop_lag.set(self.lag_s)


def _app(metrics: Metrics, readiness: Readiness, watch: _LoopWatch) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return _json(200, {"status": "ok", "loop_lag_s": round(watch.lag_s, 3)})

    async def readyz(_: web.Request) -> web.Response:
        ready, state = readiness.state()
        metrics.ready.set(1 if ready else 0)
        return _json(200 if ready else 503, {"status": state})

    async def metrics_page(_: web.Request) -> web.Response:
        metrics.ready.set(1 if readiness.state()[0] else 0)
        body = generate_latest(metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


@asynccontextmanager
async def serve(metrics: Metrics, readiness: Readiness, host: str, port: int) -> AsyncIterator[int]:
    """Serve the endpoint while the block runs; yields the bound port (`port` 0: any free one)."""
    watch = _LoopWatch(metrics)
    runner = web.AppRunner(_app(metrics, readiness, watch), access_log=None, handle_signals=False)
    await runner.setup()
    watcher = asyncio.create_task(watch.run(), name="loop-watch")
    try:
        await web.TCPSite(runner, host, port).start()
        bound = int(runner.addresses[0][1])
        log.info("probes.listening", host=host, port=bound)
        yield bound
    finally:
        watcher.cancel()
        await runner.cleanup()
