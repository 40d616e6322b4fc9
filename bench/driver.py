"""The userstore worker under test, as its own process: `python -m bench.driver`.

Exactly `userstore run` (settings from the environment, SIGTERM to stop), plus the probe: the
number of events settled (the worker's own metrics), CPU, RSS and event-loop lag.
"""

from __future__ import annotations

import asyncio

from bench.probe import Probe
from userstore.worker.logs import configure
from userstore.worker.metrics import Metrics
from userstore.worker.runner import run_worker
from userstore.worker.settings import Settings


def settled(metrics: Metrics) -> int:
    total = 0.0
    for counter in (metrics.events, metrics.dead_letters):
        for family in counter.collect():
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


async def main() -> None:
    settings = Settings()
    configure(settings.log_level)
    metrics = Metrics()
    probe = Probe(lambda: settled(metrics))
    probe.start()
    sampler = asyncio.create_task(probe.sample_lag())
    try:
        await run_worker(settings, metrics)
    finally:
        sampler.cancel()


if __name__ == "__main__":
    asyncio.run(main())
