"""`userstore run`: the SQS loop and the rotation duties, side by side until a stop signal."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from contextlib import AsyncExitStack

from . import metrics as metrics_module
from .app import components, consumer_for
from .logs import get_logger
from .metrics import Metrics
from .probes import Readiness, serve
from .rotation_duties import RotationDuties
from .settings import Settings

log = get_logger("userstore.runner")


async def run_worker(
    settings: Settings, metrics: Metrics, stop: asyncio.Event | None = None
) -> None:
    """Run until SIGTERM/SIGINT (or `stop`), then drain in-flight work and return.

    With `metrics_port` set, /metrics, /healthz and /readyz are served from the start (not
    ready until the consumer receives) until the drain is done (not ready while draining).
    """
    stop = stop or asyncio.Event()
    readiness = Readiness(stopping=stop)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    token = metrics_module.current.set(metrics)
    try:
        async with AsyncExitStack() as stack:
            if settings.metrics_port is not None:
                await stack.enter_async_context(
                    serve(metrics, readiness, settings.metrics_host, settings.metrics_port)
                )
            parts = await stack.enter_async_context(components(settings, metrics))
            consumer = await consumer_for(parts, metrics)
            readiness.receiving = lambda: consumer.receiving
            readiness.started = True
            # What start-up built (SDK service models, clients, keys) lives as long as the
            # process: out of the collector's sight, full collections stop re-scanning it, which
            # shortened the event loop's longest stalls under load (docs/performance.md).
            gc.freeze()
            log.info(
                "worker.started",
                pid=os.getpid(),
                key_mode=str(settings.key_mode),
                max_in_flight=settings.max_in_flight,
                table=settings.table,
                queue=settings.queue,
            )
            stream_arn = await parts.store.stream_arn() if settings.stream_enabled else None
            duties = RotationDuties(parts, metrics, stream_arn)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(consumer.run(stop), name="sqs-consumer")
                tasks.create_task(duties.run(stop), name="rotation-duties")
    finally:
        metrics_module.current.reset(token)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("worker.stopped")


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("worker.stopping", signal=sig.name)
    stop.set()
