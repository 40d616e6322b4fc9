"""What the cost legs (bench.costs) measured: plain data, kept in the pickled results."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

from bench.probe import percentile
from bench.units import Sizes


@dataclass
class RecordSizes:
    """One key mode's stored records of the typical profile: right after a create, and after a
    create and `events - 1` realistic updates."""

    users: int
    events: int
    profile_bytes: int  # the create's profile as compact JSON
    after_create: Sizes = field(default_factory=dict)
    steady: Sizes = field(default_factory=dict)
    steady_seconds: float = 0.0


@dataclass
class LatencyRun:
    """Publish-to-applied latency of events published at a paced rate."""

    shape: str  # "single" or "burst"
    events: int  # published
    publish_seconds: float  # from the first publish to the last
    latencies_ms: list[float] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    apply_seconds: float = 0.0  # from the first event applied to the last

    @property
    def rate(self) -> float:
        return self.events / self.publish_seconds if self.publish_seconds else 0.0

    @property
    def applied_rate(self) -> float:
        """Below `rate`, the worker did not keep up (applying took longer than publishing):
        the latencies then measure a growing backlog."""
        applied = len(self.latencies_ms)
        return applied / self.apply_seconds if self.apply_seconds else 0.0

    @property
    def missing(self) -> int:
        return self.events - len(self.latencies_ms)

    def p(self, fraction: float) -> float | None:
        return percentile(self.latencies_ms, fraction)


@dataclass
class BurstRun:
    """One user's burst published at once (FIFO group = user id), drained by a warm worker."""

    events: int
    settled: int  # of the burst's events, when the wait ended
    drain_s: float | None  # first publish to last applied; None: not drained in time
    timeout_s: float
    latencies_ms: list[float] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    applied_at: list[float] = field(default_factory=list)  # wall clock, each event applied

    @property
    def longest_pause_s(self) -> float | None:
        """The longest time between two events applied one after the other."""
        times = sorted(self.applied_at)
        return max((b - a for a, b in pairwise(times)), default=None)

    def per_event(self, op: str) -> float:
        return sum(n for k, n in self.calls.items() if k.startswith(op)) / self.events
