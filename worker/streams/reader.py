"""One shard's reader: iterator -> GetRecords -> handler -> checkpoint, until told to stop.

- the checkpoint moves only after the handler returned (at-least-once: a crash in between
  re-delivers what was handled since, so the handler must be idempotent); at the shard's end it
  is SHARD_END;
- the checkpoint is written at most every `checkpoint_every_s` by the reader; in between it rides
  on the next lease renewal, and it is always written on stop and hand-off. A crash re-delivers
  at most that much more; under load it saves a lease write per batch;
- after a page shorter than `max_records` (caught up, or nearly) the reader waits `poll_idle_s`
  before the next read, loaded or not, as the KCL does: the stream is read about once per
  interval instead of once per batch handled. Only a full page (behind) is followed at once;
- the handler failing: nothing moves; after a capped, jittered backoff the iterator is
  re-created from the last position handled (written or not) and the same records are read and
  handed over again, forever if need be (records are never skipped; lag grows and shows);
- an expired iterator, and a read still failing after the adapter's retries (moto answers HTTP
  500 for an iterator it doesn't know): a new iterator from that same position;
- a trimmed position (the checkpoint is older than the 24-hour retention): a warning naming the
  shard, then the trim horizon;
- the lease lost (a renew or checkpoint condition failed, or the lease lapsed on our own clock
  because renewals kept failing): stop at once, without checkpointing.

Logs carry shard ids, counts, event names and error classes, never record contents.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from ..errors import AwsUnavailable
from ..logs import get_logger
from .config import StreamConfig
from .held import HeldLease, wait
from .lineage import SHARD_END
from .metrics import StreamMetrics
from .records import Page, RecordHandler, ShardIterator, StreamRecord, Unreadable

if TYPE_CHECKING:  # ports imports the streams package's types
    from ..ports import StreamShards

log = get_logger("userstore.streams")


class Exit(StrEnum):
    """How a reader ended (logged as `outcome`)."""

    SHARD_END = "shard_end"
    STOPPED = "stopped"
    HANDED_OFF = "handed_off"
    LOST = "lost"
    GONE = "gone"


def start_after(checkpoint: str | None, unsaved: str | None, from_horizon: bool) -> str | None:
    """Where a new iterator starts: after the last record handled (records handled but not yet
    written need not be read again), or at the trim horizon (None) when there is none or it was
    trimmed."""
    position = unsaved or checkpoint
    return None if from_horizon else position


class ShardReader:
    """Reads the shard of `held` until it ends, the lease goes, or `held.stop` is set."""

    def __init__(
        self,
        held: HeldLease,
        shards: StreamShards,
        handler: RecordHandler,
        *,
        config: StreamConfig,
        clock: Callable[[], float],
        metrics: StreamMetrics | None,
    ) -> None:
        self.held = held
        self._shards = shards
        self._handler = handler
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._failures = 0  # consecutive failed batches or reads, for the backoff
        self._from_horizon = False  # the checkpoint was trimmed: read from the trim horizon
        self._pending_since: datetime | None = None  # oldest record read and not yet handled
        self._lag_s: float | None = None  # lag when the last batch was handled (0: caught up)

    def lag_s(self, now_s: float) -> float | None:
        """The age of the oldest record read but not handled, else the last batch's lag."""
        if self._pending_since is not None:
            return max(0.0, now_s - self._pending_since.timestamp())
        return self._lag_s

    async def run(self) -> Exit:
        """Read, then release the lease (unless lost): another replica may take it at once."""
        held = self.held
        log.info(
            "stream.shard_started",
            shard_id=held.shard_id,
            checkpoint=held.lease.checkpoint or "TRIM_HORIZON",
        )
        outcome = await self._pump()
        if outcome is not Exit.LOST:
            await held.release()
        log.info("stream.shard_stopped", shard_id=held.shard_id, outcome=str(outcome))
        return outcome

    async def _pump(self) -> Exit:
        held = self.held
        if held.lease.checkpoint == SHARD_END:
            return Exit.SHARD_END  # finished by another replica since we listed the leases
        iterator: ShardIterator | None = None
        while True:
            if held.lost:
                return Exit.LOST
            if held.stop.is_set():
                # What was handled since the last write goes out before the lease does.
                if held.unsaved is not None and not await held.checkpoint(*held.unsaved):
                    return Exit.LOST
                return Exit.HANDED_OFF if held.handoff else Exit.STOPPED
            try:
                page = await self._read(iterator)
            except AwsUnavailable as exc:  # also moto's HTTP 500 for an unknown iterator
                iterator = None
                self._failures += 1
                log.warning("stream.read_failed", shard_id=held.shard_id, error=exc.reason)
                await self._backoff()
                continue
            if isinstance(page, Unreadable):
                iterator = None
                if page is Unreadable.GONE:
                    log.warning("stream.shard_gone", shard_id=held.shard_id)
                    return Exit.GONE
                if page is Unreadable.TRIMMED:
                    log.warning("stream.trimmed", shard_id=held.shard_id)
                    self._from_horizon = True
                else:
                    log.info("stream.iterator_expired", shard_id=held.shard_id)
                self._failures += 1
                if self._failures > 1:
                    await self._backoff()
                continue
            if page.records:
                if not await self._deliver(page.records):
                    iterator = None  # the same records again, from the last position handled
                    continue
            else:
                self._failures = 0
            if page.next_iterator is None:
                return Exit.SHARD_END if await held.checkpoint(SHARD_END, None) else Exit.LOST
            iterator = page.next_iterator
            if len(page.records) < self._config.max_records:
                if not page.records and self._lag_s is not None:
                    self._lag_s = 0.0
                await wait(held.stop, self._config.poll_idle_s)

    async def _read(self, iterator: ShardIterator | None) -> Page | Unreadable:
        if iterator is None:
            held = self.held
            after = start_after(
                held.lease.checkpoint, held.unsaved[0] if held.unsaved else None, self._from_horizon
            )
            found = await self._shards.iterator(held.shard_id, after)
            if isinstance(found, Unreadable):
                return found
            iterator = found
        return await self._shards.read(iterator, self._config.max_records)

    async def _deliver(self, records: tuple[StreamRecord, ...]) -> bool:
        """Hand the batch over, then checkpoint it, now or with a later write. False: read it
        again from the last position handled."""
        held = self.held
        if self._pending_since is None:
            self._pending_since = records[0].approximate_created_at
        if held.lapsed:
            log.warning("stream.lease_lapsed", shard_id=held.shard_id)
            held.lose()
            return False
        try:
            await self._handler(records)
        except Exception as exc:  # any handler failure means: this batch again, later
            self._failures += 1
            log.warning(
                "stream.batch_failed",
                shard_id=held.shard_id,
                error=type(exc).__name__,
                count=len(records),
                attempt=self._failures,
            )
            if self._metrics is not None:
                self._metrics.failures.labels(error=type(exc).__name__).inc()
            await self._backoff()
            return False
        last = records[-1]
        held.unsaved = (last.sequence_number, last.approximate_created_at)
        self._from_horizon = False  # a position past the trim horizon is known again
        due = self._clock() - held.saved_at_s >= self._config.checkpoint_every_s
        if due and not await held.checkpoint(*held.unsaved):
            return False
        self._failures = 0
        self._pending_since = None
        self._lag_s = max(0.0, self._clock() - last.approximate_created_at.timestamp())
        events = Tally(str(record.event_name) for record in records)
        log.debug("stream.batch", shard_id=held.shard_id, count=len(records), events=events)
        if self._metrics is not None:
            for event, count in events.items():
                self._metrics.records.labels(event=event).inc(count)
        return True

    async def _backoff(self) -> None:
        """Wait before trying again, but wake at once when told to stop."""
        await wait(self.held.stop, self._config.backoff_s(self._failures))
