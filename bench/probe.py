"""What every process under test reports about itself, on request over stdin/stdout.

The orchestrator writes `peek` or `mark` (one line) to the process's stdin; the process answers
one JSON line on stdout: `peek`, the time and the events settled so far (cheap, for polling);
`mark`, also its own CPU time (all threads), current and peak RSS, and, for asyncio processes,
the event-loop lag percentiles over the samples since the last `mark` (which starts a new
window), and where the time went in the slowest 1% of wake-ups: how much of it the loop's thread
was running, how much other threads of the process were (holding the GIL, mostly), and how much
the process was not running at all (waiting for a CPU that other processes had). Measuring
inside the process keeps the emulator, the proxy and the orchestrator out of the figures.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

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


class LagSample(NamedTuple):
    late_ms: float  # how late the wake-up was
    span_ms: float  # the whole sleep, lateness included
    loop_cpu_ms: float  # CPU time of the loop's thread over the span
    process_cpu_ms: float  # CPU time of the whole process (all threads) over the span


def tail_shares(samples: list[LagSample], fraction: float = 0.99) -> dict[str, float | None]:
    """Over the wake-ups at or beyond the `fraction` percentile of lateness: the share of their
    spans the loop's thread ran, other threads ran, and the process was not running at all."""
    cut = percentile([s.late_ms for s in samples], fraction)
    tail = [s for s in samples if cut is not None and s.late_ms >= cut]
    span = sum(s.span_ms for s in tail)
    if not tail or span <= 0:
        return {"tail_loop": None, "tail_threads": None, "tail_off_cpu": None}
    loop = sum(s.loop_cpu_ms for s in tail)
    process = sum(s.process_cpu_ms for s in tail)
    return {
        "tail_loop": min(1.0, loop / span),
        "tail_threads": min(1.0, max(0.0, process - loop) / span),
        "tail_off_cpu": max(0.0, 1.0 - process / span),
    }


class Probe:
    def __init__(
        self,
        settled: Callable[[], int],
        extra: dict[str, Callable[[], dict[str, object]]] | None = None,
    ) -> None:
        self._settled = settled
        # Further commands, each answering a JSON object (bench.driver: `applied`).
        self._extra = extra or {}
        self._lags: list[LagSample] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Answer requests from stdin on a daemon thread (works for sync and async processes)."""
        threading.Thread(target=self._serve, name="bench-probe", daemon=True).start()

    async def sample_lag(self) -> None:
        """How late a fixed sleep wakes up: the time the loop was busy with something else."""
        while True:
            started, loop_cpu, process_cpu = (
                time.monotonic(),
                time.thread_time(),
                time.process_time(),
            )
            await asyncio.sleep(LAG_INTERVAL_S)
            span_s = time.monotonic() - started
            sample = LagSample(
                late_ms=max(0.0, (span_s - LAG_INTERVAL_S) * 1000),
                span_ms=span_s * 1000,
                loop_cpu_ms=(time.thread_time() - loop_cpu) * 1000,
                process_cpu_ms=(time.process_time() - process_cpu) * 1000,
            )
            with self._lock:
                self._lags.append(sample)

    def snapshot(self, *, reset: bool) -> dict[str, object]:
        with self._lock:
            samples, self._lags = self._lags, ([] if reset else self._lags)
        lags = [sample.late_ms for sample in samples]
        return {
            "t": time.monotonic(),
            "settled": self._settled(),
            "cpu_s": time.process_time(),
            "rss_kb": rss_kb(),
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "lag_p50_ms": percentile(lags, 0.50),
            "lag_p99_ms": percentile(lags, 0.99),
            "lag_samples": len(lags),
            **tail_shares(samples),
        }

    def _serve(self) -> None:
        for line in sys.stdin:
            command = line.strip()
            if command not in ("peek", "mark", *self._extra):
                continue
            if command in self._extra:
                answer = json.dumps(self._extra[command]())
            elif command == "peek":  # cheap: the orchestrator polls with it
                answer = json.dumps({"t": time.monotonic(), "settled": self._settled()})
            else:
                answer = json.dumps(self.snapshot(reset=True))
            sys.stdout.write(answer + "\n")
            sys.stdout.flush()
