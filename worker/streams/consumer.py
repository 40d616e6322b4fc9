"""The stream consumer: leased shards -> batches of records -> handler -> checkpoint.

One coordinator (in `run`) lists the shards and the leases every `discover_every_s`, decides with
the pure `lineage.readable` and `balance.plan`, takes leases and starts one reader task per shard
it owns; every `renew_every_s` it renews them. A reader loops GetRecords -> handler -> checkpoint:

- the checkpoint moves only after the handler returned (at-least-once: a crash in between
  re-delivers what was handled since, so the handler must be idempotent); at the shard's end it
  is SHARD_END;
- the checkpoint is written at most every `checkpoint_every_s` by the reader; in between it rides
  on the next lease renewal, and it is always written on stop and hand-off. A crash re-delivers
  at most that much more; under load it saves a lease write per batch;
- after a page shorter than `max_records` (caught up, or nearly) the reader waits `poll_idle_s`
  before the next GetRecords, loaded or not, as the KCL does: the stream is read about once per
  interval instead of once per batch handled. Only a full page (behind) is followed at once;
- the handler failing: nothing moves; after a capped, jittered backoff the iterator is
  re-created from the last position handled (written or not) and the same records are read and
  handed over again, forever if need be (records are never skipped; lag grows and shows);
- ExpiredIteratorException, and GetRecords still failing after worker.aws.call's retries (moto
  answers HTTP 500 for an iterator it doesn't know): a new iterator from that same position;
- TrimmedDataAccessException (the checkpoint is older than the 24-hour retention): a warning
  naming the shard, then TRIM_HORIZON;
- the lease lost (a renew or checkpoint condition failed, or the lease lapsed on our own clock
  because renewals kept failing): stop at once, without checkpointing.

On stop, each reader finishes the batch in hand, checkpoints it and releases its lease, so other
replicas take over at once. Every task runs in one TaskGroup: an unexpected error in any of them
ends `run` with it. Logs carry shard ids, counts, event names and error classes, never record
contents (ciphertext and user ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import weakref
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..aws import Refused, call
from ..errors import AwsUnavailable
from ..errors import StreamNotFound as StreamNotFound
from ..logs import get_logger
from ..metrics import Metrics
from .balance import Lease, plan
from .leases import LeaseLost, LeaseStore, LeaseTable
from .lineage import SHARD_END, Shard, readable

log = get_logger("userstore.streams")

_READ_ERRORS = frozenset(
    {"ExpiredIteratorException", "TrimmedDataAccessException", "ResourceNotFoundException"}
)
_ITERATOR_ERRORS = frozenset({"TrimmedDataAccessException", "ResourceNotFoundException"})


class EventName(StrEnum):
    INSERT = "INSERT"
    MODIFY = "MODIFY"
    REMOVE = "REMOVE"


@dataclass(frozen=True)
class StreamRecord:
    """One stream record. Images are DynamoDB JSON; repr leaves out keys and images (personal)."""

    event_name: EventName
    keys: Mapping[str, Any] = field(repr=False)
    new_image: Mapping[str, Any] | None = field(repr=False)
    old_image: Mapping[str, Any] | None = field(repr=False)
    sequence_number: str
    approximate_created_at: datetime
    shard_id: str

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], shard_id: str) -> StreamRecord:
        body = raw["dynamodb"]
        created = body["ApproximateCreationDateTime"]
        if isinstance(created, int | float):
            created = datetime.fromtimestamp(created, UTC)
        elif created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return cls(
            event_name=EventName(raw["eventName"]),
            keys=body["Keys"],
            new_image=body.get("NewImage"),
            old_image=body.get("OldImage"),
            sequence_number=str(body["SequenceNumber"]),
            approximate_created_at=created,
            shard_id=shard_id,
        )


RecordHandler = Callable[[Sequence[StreamRecord]], Awaitable[None]]


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


class _Exit(StrEnum):
    SHARD_END = "shard_end"
    STOPPED = "stopped"
    HANDED_OFF = "handed_off"
    LOST = "lost"
    GONE = "gone"


@dataclass
class _Held:
    """A lease this replica holds, and what its reader is told."""

    lease: Lease
    valid_until_s: float  # our clock: a lease not renewed by then may be someone else's
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one write to the item at a time
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # finish the batch, release
    lost: bool = False
    handoff: bool = False
    from_horizon: bool = False  # the checkpoint was trimmed: read from TRIM_HORIZON
    failures: int = 0  # consecutive failed batches or reads, for the backoff
    pending_since: datetime | None = None  # oldest record read and not yet handled
    lag_s: float | None = None  # lag when the last batch was handled (0 once caught up)
    # Handled but not yet written: (sequence number, its record's time). Written by the reader
    # when checkpoint_every_s has passed since saved_at_s, by the next renewal, or on stop.
    unsaved: tuple[str, datetime] | None = None
    saved_at_s: float = float("-inf")

    @property
    def shard_id(self) -> str:
        return self.lease.shard_id


class _StreamMetrics:
    """The consumer's metrics, registered once per registry (replicas in a test share one)."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, _StreamMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "userstore_stream_lag_seconds",
            "How far behind the stream the consumer is (oldest unhandled record's age).",
            registry=registry,
        )
        self.records = Counter(
            "userstore_stream_records",
            "Stream records handled and checkpointed, by event name.",
            ["event"],
            registry=registry,
        )
        self.failures = Counter(
            "userstore_stream_batch_failures",
            "Batches the handler failed on (retried from the checkpoint), by error class.",
            ["error"],
            registry=registry,
        )
        self.shards = Gauge(
            "userstore_stream_shards_owned", "Shard leases this replica holds.", registry=registry
        )

    @classmethod
    def of(cls, metrics: Metrics) -> _StreamMetrics:
        found = cls._by_registry.get(metrics.registry)
        if found is None:
            found = cls._by_registry[metrics.registry] = cls(metrics.registry)
        return found


class StreamConsumer:
    """Reads one DynamoDB stream with leases shared among replicas; see the module docstring."""

    def __init__(
        self,
        streams_client: Any,
        dynamodb_client: Any,
        *,
        stream_arn: str,
        lease_table: str,
        worker_id: str,
        handler: RecordHandler,
        config: StreamConfig,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        leases: LeaseStore | None = None,
    ) -> None:
        """`clock` gives epoch seconds for lease times; `leases` replaces the table in tests."""
        self._streams = streams_client
        self._stream_arn = stream_arn
        self._worker_id = worker_id
        self._handler = handler
        self._config = config
        self._clock = clock
        self._leases: LeaseStore = leases or LeaseTable(
            dynamodb_client,
            lease_table,
            stream_arn=stream_arn,
            lease_duration_s=config.lease_duration_s,
            max_attempts=config.max_attempts,
        )
        self._metrics = None if metrics is None else _StreamMetrics.of(metrics)
        self._held: dict[str, _Held] = {}
        self._wake = asyncio.Event()  # a reader ended, or stop: plan again now

    @property
    def lag_s(self) -> float | None:
        """Seconds behind the stream, over the shards held: the age of the oldest record read
        but not yet handled (so it grows while the handler fails), else how old the last batch
        was when handled (0 once a read finds the shard caught up). None before any record.
        """
        now = self._clock()
        lags = [
            max(0.0, now - held.pending_since.timestamp())
            if held.pending_since is not None
            else held.lag_s
            for held in self._held.values()
        ]
        known = [lag for lag in lags if lag is not None]
        return max(known) if known else None

    @property
    def owned_shards(self) -> frozenset[str]:
        """Shards whose lease this replica holds now (for tests and status output)."""
        return frozenset(self._held)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop`; then let readers finish their batch, release, and return."""
        log.info("stream.started", worker_id=self._worker_id)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._relay(stop))
            await self._coordinate(stop, tasks)
        log.info("stream.stopped", worker_id=self._worker_id)

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    # -- coordinator -------------------------------------------------------------------------

    async def _coordinate(self, stop: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """Balance every `discover_every_s` (or when woken), renew every `renew_every_s`.

        After `stop`, keep renewing until every reader has finished its batch and released.
        """
        loop = asyncio.get_running_loop()
        next_discover = loop.time()
        next_renew = next_discover + self._config.renew_every_s
        while True:
            if stop.is_set():
                for held in self._held.values():
                    held.stop.set()
                if not self._held:
                    return
                self._wake.clear()  # readers set it again as they finish
                due = next_renew
            else:
                if loop.time() >= next_discover or self._wake.is_set():
                    self._wake.clear()
                    await self._balance(tasks)
                    next_discover = loop.time() + self._config.discover_every_s
                due = min(next_discover, next_renew)
            if loop.time() >= next_renew:
                await self._renew_all()
                next_renew = loop.time() + self._config.renew_every_s
                continue
            self._report()
            await _wait(self._wake, due - loop.time())

    async def _discover(self) -> list[Shard]:
        """Every shard of the stream, following DescribeStream's pages."""
        shards: list[Shard] = []
        start: str | None = None
        while True:
            extra = {} if start is None else {"ExclusiveStartShardId": start}
            try:
                response = await call(
                    "DescribeStream",
                    self._streams.describe_stream,
                    max_attempts=self._config.max_attempts,
                    expected=frozenset({"ResourceNotFoundException"}),
                    StreamArn=self._stream_arn,
                    **extra,
                )
            except Refused as exc:
                raise StreamNotFound(f"stream not found ({exc.code})") from None
            description = response["StreamDescription"]
            shards.extend(
                Shard(str(shard["ShardId"]), shard.get("ParentShardId"))
                for shard in description.get("Shards", [])
            )
            start = description.get("LastEvaluatedShardId")
            if not start:
                return shards

    async def _balance(self, tasks: asyncio.TaskGroup) -> None:
        """One round: list shards and leases, take our share, ask for more if short."""
        try:
            shards = await self._discover()
            leases = await self._leases.read_all()
        except AwsUnavailable as exc:
            log.warning("stream.discover_failed", error=exc.reason)
            return
        ready = readable(shards, {shard_id: lease.checkpoint for shard_id, lease in leases.items()})
        decision = plan(
            ready,
            leases,
            me=self._worker_id,
            held=self._held.keys(),
            now_ms=self._now_ms(),
            request_ttl_ms=round(self._config.lease_duration_s * 1000),
        )
        for shard_id in decision.acquire:
            started_s = self._clock()
            try:
                lease = await self._leases.acquire(shard_id, self._worker_id, self._now_ms())
            except AwsUnavailable as exc:
                log.warning("stream.acquire_failed", shard_id=shard_id, error=exc.reason)
                return
            if lease is not None:
                held = _Held(lease, started_s + self._config.lease_duration_s)
                self._held[shard_id] = held
                tasks.create_task(self._read_shard(held), name=f"stream-shard-{shard_id}")
        if decision.request is not None:
            try:
                asked = await self._leases.request_handoff(
                    decision.request, self._worker_id, self._now_ms()
                )
            except AwsUnavailable as exc:
                log.warning("stream.handoff_request_failed", error=exc.reason)
                return
            if asked:
                log.info(
                    "stream.handoff_requested",
                    shard_id=decision.request.shard_id,
                    owner=decision.request.owner,
                    target=decision.target,
                )

    async def _renew_all(self) -> None:
        """Renew every lease held, one at a time (a replica holds a few shards)."""
        for held in list(self._held.values()):
            async with held.lock:
                if held.lost:
                    continue
                started_s = self._clock()
                unsaved = held.unsaved  # the reader may handle more while this is written
                try:
                    renewed = await self._leases.renew(
                        held.lease,
                        self._now_ms(),
                        checkpoint=unsaved[0] if unsaved else None,
                        last_record_at=unsaved[1] if unsaved else None,
                    )
                except LeaseLost:
                    self._lose(held)
                    continue
                except AwsUnavailable as exc:
                    log.warning("stream.renew_failed", shard_id=held.shard_id, error=exc.reason)
                    continue
                self._renewed(held, renewed, started_s)
                if unsaved is not None:
                    held.saved_at_s = started_s
                    if held.unsaved is unsaved:
                        held.unsaved = None

    def _renewed(self, held: _Held, lease: Lease, started_s: float) -> None:
        """Record a successful write; a pending hand-off request tells the reader to finish."""
        held.lease = lease
        held.valid_until_s = started_s + self._config.lease_duration_s
        ttl_ms = round(self._config.lease_duration_s * 1000)
        if not held.handoff and lease.handoff_requested(self._worker_id, self._now_ms(), ttl_ms):
            log.info("stream.handoff", shard_id=held.shard_id, to=lease.handoff_to)
            held.handoff = True
            held.stop.set()

    def _lose(self, held: _Held) -> None:
        if not held.lost:
            log.warning("stream.lease_lost", shard_id=held.shard_id)
        held.lost = True
        held.stop.set()

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.shards.set(len(self._held))
            lag = self.lag_s
            self._metrics.lag.set(0.0 if lag is None else lag)

    # -- one reader per shard ------------------------------------------------------------------

    async def _read_shard(self, held: _Held) -> None:
        log.info(
            "stream.shard_started",
            shard_id=held.shard_id,
            checkpoint=held.lease.checkpoint or "TRIM_HORIZON",
        )
        try:
            outcome = await self._pump(held)
            if outcome is not _Exit.LOST:
                await self._release(held)
            log.info("stream.shard_stopped", shard_id=held.shard_id, outcome=str(outcome))
        finally:
            self._held.pop(held.shard_id, None)
            self._wake.set()

    async def _pump(self, held: _Held) -> _Exit:
        """Read, hand over, checkpoint, until the shard ends, the lease goes, or we stop."""
        if held.lease.checkpoint == SHARD_END:
            return _Exit.SHARD_END  # finished by another replica since we listed the leases
        iterator: str | None = None
        while True:
            if held.lost:
                return _Exit.LOST
            if held.stop.is_set():
                # What was handled since the last write goes out before the lease does.
                if held.unsaved is not None and not await self._checkpoint(held, *held.unsaved):
                    return _Exit.LOST
                return _Exit.HANDED_OFF if held.handoff else _Exit.STOPPED
            try:
                if iterator is None:
                    iterator = await self._iterator(held)
                response = await call(
                    "GetRecords",
                    self._streams.get_records,
                    max_attempts=self._config.max_attempts,
                    expected=_READ_ERRORS,
                    ShardIterator=iterator,
                    Limit=self._config.max_records,
                )
            except Refused as exc:
                iterator = None
                code = exc.code
                if code == "ResourceNotFoundException":
                    log.warning("stream.shard_gone", shard_id=held.shard_id)
                    return _Exit.GONE
                if code == "TrimmedDataAccessException":
                    log.warning("stream.trimmed", shard_id=held.shard_id)
                    held.from_horizon = True
                else:
                    log.info("stream.iterator_expired", shard_id=held.shard_id)
                held.failures += 1
                if held.failures > 1:
                    await self._backoff(held)
                continue
            except AwsUnavailable as exc:
                # Also moto's HTTP 500 for an iterator it doesn't know: start over from the
                # checkpoint, as for an expired iterator.
                iterator = None
                held.failures += 1
                log.warning("stream.read_failed", shard_id=held.shard_id, error=exc.reason)
                await self._backoff(held)
                continue
            records = [StreamRecord.from_raw(raw, held.shard_id) for raw in response["Records"]]
            if records:
                if not await self._deliver(held, records):
                    iterator = None  # the same records again, from the checkpoint
                    continue
            else:
                held.failures = 0
            following = response.get("NextShardIterator")
            if following is None:
                if not await self._checkpoint(held, SHARD_END, None):
                    return _Exit.LOST
                return _Exit.SHARD_END
            iterator = following
            if len(records) < self._config.max_records:
                if not records:
                    held.lag_s = 0.0 if held.lag_s is not None else None
                await self._pause(held, self._config.poll_idle_s)

    async def _iterator(self, held: _Held) -> str:
        # Records handled but not yet checkpointed need not be read again.
        checkpoint = held.unsaved[0] if held.unsaved else held.lease.checkpoint
        if checkpoint is None or held.from_horizon:
            position: dict[str, str] = {"ShardIteratorType": "TRIM_HORIZON"}
        else:
            position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": checkpoint}
        response = await call(
            "GetShardIterator",
            self._streams.get_shard_iterator,
            max_attempts=self._config.max_attempts,
            expected=_ITERATOR_ERRORS,
            StreamArn=self._stream_arn,
            ShardId=held.shard_id,
            **position,
        )
        return str(response["ShardIterator"])

    async def _deliver(self, held: _Held, records: list[StreamRecord]) -> bool:
        """Hand the batch over, then checkpoint it, now or with a later write. False: read it
        again from the last position handled."""
        if held.pending_since is None:
            held.pending_since = records[0].approximate_created_at
        if self._clock() >= held.valid_until_s:
            log.warning("stream.lease_lapsed", shard_id=held.shard_id)
            self._lose(held)
            return False
        try:
            await self._handler(records)
        except Exception as exc:  # any handler failure means: this batch again, later
            held.failures += 1
            log.warning(
                "stream.batch_failed",
                shard_id=held.shard_id,
                error=type(exc).__name__,
                count=len(records),
                attempt=held.failures,
            )
            if self._metrics is not None:
                self._metrics.failures.labels(error=type(exc).__name__).inc()
            await self._backoff(held)
            return False
        last = records[-1]
        held.unsaved = (last.sequence_number, last.approximate_created_at)
        held.from_horizon = False  # a position past the trim horizon is known again
        due = self._clock() - held.saved_at_s >= self._config.checkpoint_every_s
        if due and not await self._checkpoint(held, *held.unsaved):
            return False
        held.failures = 0
        held.pending_since = None
        held.lag_s = max(0.0, self._clock() - last.approximate_created_at.timestamp())
        events = Tally(str(record.event_name) for record in records)
        log.debug("stream.batch", shard_id=held.shard_id, count=len(records), events=events)
        if self._metrics is not None:
            for event, count in events.items():
                self._metrics.records.labels(event=event).inc(count)
        return True

    async def _checkpoint(
        self, held: _Held, checkpoint: str, last_record_at: datetime | None
    ) -> bool:
        """Write the checkpoint (renewing the lease), retrying while the lease is ours.

        False when the lease is lost, to another replica or by lapsing while AWS was down.
        """
        while True:
            async with held.lock:
                if held.lost:
                    return False
                started_s = self._clock()
                try:
                    renewed = await self._leases.renew(
                        held.lease,
                        self._now_ms(),
                        checkpoint=checkpoint,
                        last_record_at=last_record_at,
                    )
                except LeaseLost:
                    self._lose(held)
                    return False
                except AwsUnavailable as exc:
                    log.warning(
                        "stream.checkpoint_failed", shard_id=held.shard_id, error=exc.reason
                    )
                else:
                    self._renewed(held, renewed, started_s)
                    held.from_horizon = False
                    # Only the reader sets `unsaved`, and it is here: nothing newer is pending.
                    held.unsaved = None
                    held.saved_at_s = started_s
                    return True
            if self._clock() >= held.valid_until_s:
                self._lose(held)
                return False
            await asyncio.sleep(self._delay(1))

    async def _release(self, held: _Held) -> None:
        async with held.lock:
            try:
                await self._leases.release(held.lease, self._now_ms())
            except (LeaseLost, AwsUnavailable) as exc:  # it expires by itself
                log.warning("stream.release_failed", shard_id=held.shard_id, error=str(exc))

    def _delay(self, attempt: int) -> float:
        """Capped exponential backoff with jitter: between half and all of the step."""
        step = min(
            self._config.retry_max_s, self._config.retry_base_s * 2.0 ** min(attempt - 1, 30)
        )
        return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not crypto

    async def _backoff(self, held: _Held) -> None:
        await self._pause(held, self._delay(max(1, held.failures)))

    async def _pause(self, held: _Held, seconds: float) -> None:
        """Sleep, but wake at once when the reader is told to stop."""
        await _wait(held.stop, seconds)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for `event`, `seconds` at most.

    Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the event is
    set, and the TaskGroup's abort would go unnoticed.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
