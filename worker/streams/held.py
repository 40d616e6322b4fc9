"""A shard lease this replica holds: its writes, one at a time, and what its reader is told.

Two tasks write one lease: the coordinator renews it every `renew_every_s`, the reader
checkpoints it. A lock keeps them to one conditional write at a time (each carries the counter
the last one returned). A renewal also carries a checkpoint the reader handled but did not write
yet. A renewal that finds a hand-off request, or any write that finds the lease lost, sets
`stop`: the reader finishes (hand-off) or drops (lost) the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

from ..errors import AwsUnavailable
from ..logs import get_logger
from .balance import Lease
from .config import StreamConfig
from .leases import LeaseLost, LeaseStore

log = get_logger("userstore.streams")


class HeldLease:
    def __init__(
        self,
        lease: Lease,
        leases: LeaseStore,
        *,
        worker_id: str,
        config: StreamConfig,
        clock: Callable[[], float],
        taken_at_s: float,
    ) -> None:
        self.lease = lease
        self.stop = asyncio.Event()  # finish the batch in hand, then release (or drop, if lost)
        self.lost = False
        self.handoff = False
        # Handled but not yet written: (sequence number, its record's time). Written by the
        # reader when checkpoint_every_s has passed since saved_at_s, by a renewal, or on stop.
        self.unsaved: tuple[str, datetime] | None = None
        self.saved_at_s = float("-inf")
        self._leases = leases
        self._worker_id = worker_id
        self._config = config
        self._clock = clock
        self._valid_until_s = taken_at_s + config.lease_duration_s  # on our clock
        self._lock = asyncio.Lock()

    @property
    def shard_id(self) -> str:
        return self.lease.shard_id

    @property
    def lapsed(self) -> bool:
        """Not renewed for a lease duration (on our clock): it may be someone else's now."""
        return self._clock() >= self._valid_until_s

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def lose(self) -> None:
        if not self.lost:
            log.warning("stream.lease_lost", shard_id=self.shard_id)
        self.lost = True
        self.stop.set()

    async def renew(self) -> None:
        """The coordinator's renewal: one attempt, carrying what the reader has not written."""
        async with self._lock:
            if self.lost:
                return
            started_s = self._clock()
            unsaved = self.unsaved  # the reader may handle more while this is written
            try:
                renewed = await self._leases.renew(
                    self.lease,
                    self._now_ms(),
                    checkpoint=unsaved[0] if unsaved else None,
                    last_record_at=unsaved[1] if unsaved else None,
                )
            except LeaseLost:
                self.lose()
                return
            except AwsUnavailable as exc:
                log.warning("stream.renew_failed", shard_id=self.shard_id, error=exc.reason)
                return
            self._renewed(renewed, started_s)
            if unsaved is not None:
                self.saved_at_s = started_s
                if self.unsaved is unsaved:
                    self.unsaved = None

    async def checkpoint(self, checkpoint: str, last_record_at: datetime | None) -> bool:
        """Write the checkpoint (renewing the lease), retrying while the lease is ours.

        False when the lease is lost, to another replica or by lapsing while AWS was down.
        """
        while True:
            async with self._lock:
                if self.lost:
                    return False
                started_s = self._clock()
                try:
                    renewed = await self._leases.renew(
                        self.lease,
                        self._now_ms(),
                        checkpoint=checkpoint,
                        last_record_at=last_record_at,
                    )
                except LeaseLost:
                    self.lose()
                    return False
                except AwsUnavailable as exc:
                    log.warning(
                        "stream.checkpoint_failed", shard_id=self.shard_id, error=exc.reason
                    )
                else:
                    self._renewed(renewed, started_s)
                    # Only the reader sets `unsaved`, and it is here: nothing newer is pending.
                    self.unsaved = None
                    self.saved_at_s = started_s
                    return True
            if self.lapsed:
                self.lose()
                return False
            await asyncio.sleep(self._config.backoff_s(1))

    async def release(self) -> None:
        async with self._lock:
            try:
                await self._leases.release(self.lease, self._now_ms())
            except (LeaseLost, AwsUnavailable) as exc:  # it expires by itself
                log.warning("stream.release_failed", shard_id=self.shard_id, error=str(exc))

    def _renewed(self, lease: Lease, started_s: float) -> None:
        """Record a successful write; a pending hand-off request tells the reader to finish."""
        self.lease = lease
        self._valid_until_s = started_s + self._config.lease_duration_s
        ttl_ms = self._config.lease_duration_ms
        if not self.handoff and lease.handoff_requested(self._worker_id, self._now_ms(), ttl_ms):
            log.info("stream.handoff", shard_id=self.shard_id, to=lease.handoff_to)
            self.handoff = True
            self.stop.set()


async def wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for `event`, `seconds` at most.

    Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the event is
    set, and the TaskGroup's abort would go unnoticed.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
