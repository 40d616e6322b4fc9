"""Processes under test, and the AWS calls they made (counted by the proxy in front of moto)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


def calls_by_operation(stats: dict[str, Any]) -> Counter[str]:
    """`service:Operation` -> calls, from the proxy's GET /__faults__/stats."""
    counts: Counter[str] = Counter()
    for service, entry in stats.get("services", {}).items():
        for operation, op in entry.get("operations", {}).items():
            counts[f"{service}:{operation}"] += int(op["calls"])
    return counts


@dataclass
class Window:
    """What a process did between two snapshots."""

    events: int
    seconds: float
    cpu_s: float
    calls: Counter[str] = field(default_factory=Counter)
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    # The slowest 1% of the loop's wake-ups: share of their time the loop's thread ran, other
    # threads of the process ran, and the process was not running (see bench.probe).
    lag_tail_loop: float | None = None
    lag_tail_threads: float | None = None
    lag_tail_off_cpu: float | None = None
    rss_kb: int = 0
    maxrss_kb: int = 0
    # The kinds legs: every call from the process's start to the last event settled, and the
    # events of the leg (bench.report_costs prices writes and reads per event with them).
    leg_calls: Counter[str] = field(default_factory=Counter)
    leg_events: int = 0

    @property
    def cpu_ms_per_event(self) -> float:
        return 1000 * self.cpu_s / self.events

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    def calls_per_event(self, prefix: str = "") -> float:
        return sum(n for k, n in self.calls.items() if k.startswith(prefix)) / self.events


class Subject:
    """A process under test (bench.driver, bench.floor, bench.naive) answering probe requests."""

    def __init__(self, module: str, env: dict[str, str], log: IO[bytes]) -> None:
        self.module = module
        self.proc = subprocess.Popen(  # noqa: S603 - our own modules, no shell
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=ROOT,
            text=True,
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.module} exited (code {self.proc.wait()}); see the bench log")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def wait_warm(self, records: int, timeout_s: float = 60, poll_s: float = 0.05) -> None:
        """Until the worker's stream reader holds its shard and has read `records` records (the
        warm-up's writes): a leg then measures the worker, not its start (bench.driver only)."""
        deadline = time.monotonic() + timeout_s
        while True:
            stream = self.ask("stream")
            if stream["shards"] >= 1 and stream["records"] >= records:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.module}: stream reader not warm in {timeout_s:.0f} s")
            time.sleep(poll_s)

    def wait_settled(self, at_least: int, timeout_s: float, poll_s: float = 0.05) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            snap = self.ask("peek")
            if snap["settled"] >= at_least:
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.module}: {snap['settled']} of {at_least} events settled in "
                    f"{timeout_s:.0f} s"
                )
            time.sleep(poll_s)

    def measure(self, control: Any, total: int, timeout_s: float) -> Window:
        """From the first settled event to `total` settled: CPU, time, calls, lag, RSS."""
        self.wait_settled(1, timeout_s)
        start = self.ask("mark")
        calls0 = calls_by_operation(control.stats().data)
        self.wait_settled(total, timeout_s)
        end = self.ask("mark")
        calls = calls_by_operation(control.stats().data)
        calls.subtract(calls0)
        return Window(
            events=end["settled"] - start["settled"],
            seconds=end["t"] - start["t"],
            cpu_s=end["cpu_s"] - start["cpu_s"],
            calls=+calls,
            lag_p50_ms=end["lag_p50_ms"],
            lag_p99_ms=end["lag_p99_ms"],
            lag_tail_loop=end.get("tail_loop"),
            lag_tail_threads=end.get("tail_threads"),
            lag_tail_off_cpu=end.get("tail_off_cpu"),
            rss_kb=end["rss_kb"],
            maxrss_kb=end["maxrss_kb"],
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def clean_environ() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("USERSTORE_", "AWS_ENDPOINT_URL", "BENCH_"))
    }
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - the emulator's dummy credentials
        AWS_REGION="eu-west-2",
        AWS_DEFAULT_REGION="eu-west-2",
        PYTHONWARNINGS="ignore",
    )
    return env
