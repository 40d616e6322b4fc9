"""What every process under test reports about itself, on request over stdin/stdout.

The orchestrator writes `peek` or `mark` (one line) to the process's stdin; the process answers
one JSON line on stdout: `peek`, the time and the events settled so far (cheap, for polling);
`mark`, also its own CPU time (all threads), current and peak RSS, and, for asyncio processes,
the event-loop lag percentiles over the samples since the last `mark` (which starts a new
window). Measuring inside the process keeps the emulator, the
proxy and the orchestrator out of the figures.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import threading
import time
from collections.abc import Callable

LAG_INTERVAL_S = 0.01


def rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Probe:
    def __init__(self, settled: Callable[[], int]) -> None:
        self._settled = settled
        self._lags_ms: list[float] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Answer requests from stdin on a daemon thread (works for sync and async processes)."""
        threading.Thread(target=self._serve, name="bench-probe", daemon=True).start()

    async def sample_lag(self) -> None:
        """How late a fixed sleep wakes up: the time the loop was busy with something else."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(LAG_INTERVAL_S)
            late_ms = (time.monotonic() - started - LAG_INTERVAL_S) * 1000
            with self._lock:
                self._lags_ms.append(max(0.0, late_ms))

    def snapshot(self, *, reset: bool) -> dict[str, object]:
        with self._lock:
            lags, self._lags_ms = self._lags_ms, ([] if reset else self._lags_ms)
        return {
            "t": time.monotonic(),
            "settled": self._settled(),
            "cpu_s": time.process_time(),
            "rss_kb": rss_kb(),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "lag_p50_ms": percentile(lags, 0.50),
            "lag_p99_ms": percentile(lags, 0.99),
            "lag_samples": len(lags),
        }

    def _serve(self) -> None:
        for line in sys.stdin:
            command = line.strip()
            if command not in ("peek", "mark"):
                continue
            if command == "peek":  # cheap: the orchestrator polls with it
                answer = json.dumps({"t": time.monotonic(), "settled": self._settled()})
            else:
                answer = json.dumps(self.snapshot(reset=True))
            sys.stdout.write(answer + "\n")
            sys.stdout.flush()
