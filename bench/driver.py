"""The userstore worker under test, as its own process: `python -m bench.driver`.

Exactly `userstore run` (settings from the environment, SIGTERM to stop), plus the probe: the
number of events settled (the worker's own metrics), CPU, RSS and event-loop lag, and when each
event was applied (`applied`: event id -> wall-clock time of its `message.handled` log line,
which the worker writes once the event's outcome is stored; the latency legs compare it with
the time the orchestrator published the event).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import structlog

from bench.probe import Probe
from userstore.worker.logs import configure
from userstore.worker.metrics import Metrics
from userstore.worker.runner import run_worker
from userstore.worker.settings import Settings
from userstore.worker.streams.metrics import StreamMetrics

HANDLED = "message.handled"


def stream_state(metrics: Metrics) -> dict[str, object]:
    """Shard leases held and stream records handled: a warm worker holds its shard."""
    stream = StreamMetrics.of(metrics)
    records = sum(
        sample.value
        for family in stream.records.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    shards = metrics.registry.get_sample_value("userstore_stream_shards_owned") or 0
    return {"shards": int(shards), "records": int(records)}


def settled(metrics: Metrics) -> int:
    total = 0.0
    for counter in (metrics.events, metrics.dead_letters):
        for family in counter.collect():
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


class AppliedTimes:
    """A structlog processor noting when each event's `message.handled` line is written."""

    def __init__(self) -> None:
        self._times: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_id = event_dict.get("event_id")
        if event_dict.get("event") == HANDLED and isinstance(event_id, str):
            now = time.time()
            with self._lock:
                self._times.setdefault(event_id, now)
        return event_dict

    def take(self) -> dict[str, object]:
        """The times noted since the last call (and forget them: the process may run long)."""
        with self._lock:
            times, self._times = self._times, {}
        return {"applied": times}


async def main() -> None:
    settings = Settings()
    configure(settings.log_level)
    applied = AppliedTimes()
    processors = list(structlog.get_config()["processors"])
    structlog.configure(processors=[applied, *processors])
    metrics = Metrics()
    probe = Probe(
        lambda: settled(metrics),
        {"applied": applied.take, "stream": lambda: stream_state(metrics)},
    )
    probe.start()
    sampler = asyncio.create_task(probe.sample_lag())
    try:
        await run_worker(settings, metrics)
    finally:
        sampler.cancel()


if __name__ == "__main__":
    asyncio.run(main())
