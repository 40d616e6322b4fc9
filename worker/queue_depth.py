"""Deciding that an SQS queue is empty, from counts that are only approximate.

One GetQueueAttributes answer can say 0 visible and 0 in flight while a message is there. AWS's
counts are eventually consistent ("all 0 for several minutes" is AWS's own test of an empty
queue), and moto computes the two counts one after the other, so a message whose visibility
timeout runs out between them is in neither (measured: about 1 reading in 100 taken around such
a moment). A message released with a short delay is then taken for gone, and whoever waited for
"drained" stops a worker, or retires a key, before it is applied.

So "empty" is never one reading: `Emptiness` wants every reading over a settling time to say 0,
and `settled_depth` reports the largest of several readings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# Long enough to span two or more polls; a glitch is one reading, not a run of them.
SETTLE_S = 1.0


@dataclass
class Emptiness:
    """Feed it readings; it says empty once every reading for `settle_s` was zero."""

    settle_s: float = SETTLE_S
    _zero_since: float | None = None

    def observe(self, depth: int, now: float) -> bool:
        if depth:
            self._zero_since = None
            return False
        if self._zero_since is None:
            self._zero_since = now
        return now - self._zero_since >= self.settle_s


async def settled_depth(
    read: Callable[[], Awaitable[int]], *, readings: int = 3, interval_s: float = 0.5
) -> int:
    """The largest of `readings` depth readings `interval_s` apart (0 only if all said 0)."""
    deepest = 0
    for n in range(readings):
        if n:
            await asyncio.sleep(interval_s)
        deepest = max(deepest, await read())
    return deepest
