"""The consumer's intervals and limits, and the backoff they give (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamConfig:
    lease_duration_s: float = 30.0
    renew_every_s: float = 10.0
    discover_every_s: float = 10.0
    poll_idle_s: float = 1.0
    """Wait after a page shorter than max_records (empty included) before reading again."""
    checkpoint_every_s: float = 10.0
    """The reader's own checkpoint writes at most this often; 0: after every batch."""
    max_records: int = 1000
    max_attempts: int = 5
    retry_base_s: float = 1.0
    """First backoff after a failed batch or read; doubles per failure, with jitter."""
    retry_max_s: float = 60.0
    """Backoff cap: a handler that keeps failing is retried this often."""

    def __post_init__(self) -> None:
        if not 0 < self.renew_every_s < self.lease_duration_s:
            raise ValueError("renew_every_s must be positive and shorter than lease_duration_s")
        if not 1 <= self.max_records <= 1000:
            raise ValueError("max_records must be between 1 and 1000 (the GetRecords limit)")
        if min(self.discover_every_s, self.poll_idle_s, self.retry_base_s) <= 0:
            raise ValueError("intervals must be positive")
        if self.checkpoint_every_s < 0:
            raise ValueError("checkpoint_every_s must not be negative")
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must be at least retry_base_s")

    @property
    def lease_duration_ms(self) -> int:
        """Also how long a hand-off request stands."""
        return round(self.lease_duration_s * 1000)

    def backoff_s(
        self, attempt: int, uniform: Callable[[float, float], float] = random.uniform
    ) -> float:
        """Capped exponential backoff with jitter: between half and all of the step."""
        step = min(self.retry_max_s, self.retry_base_s * 2.0 ** min(max(1, attempt) - 1, 30))
        return step / 2 + uniform(0, step / 2)
