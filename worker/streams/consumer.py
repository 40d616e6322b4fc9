"""The stream consumer's coordinator: shards -> fair share of leases -> one reader per shard.

Every `discover_every_s` (and whenever a reader ends) it lists the shards and the leases,
decides with the pure `lineage.readable` and `balance.plan`, takes leases, asks a loaded
replica for a hand-off when short, and starts a `ShardReader` (reader.py) for each shard it now
holds; every `renew_every_s` it renews what it holds (held.py), which is also how a reader
learns that its shard is wanted elsewhere.

On stop, each reader finishes the batch in hand, checkpoints it and releases its lease, so other
replicas take over at once; the coordinator keeps renewing until they have. Every task runs in
one TaskGroup: an unexpected error in any of them ends `run` with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import AwsUnavailable
from ..errors import StreamNotFound as StreamNotFound
from ..logs import get_logger
from ..metrics import Metrics
from .balance import Lease, plan
from .config import StreamConfig
from .held import HeldLease, wait
from .leases import LeaseStore
from .lineage import readable
from .metrics import StreamMetrics
from .reader import ShardReader
from .records import RecordHandler

if TYPE_CHECKING:  # ports imports the streams package's types
    from ..ports import StreamShards

log = get_logger("userstore.streams")


class StreamConsumer:
    """Reads one DynamoDB stream with leases shared among replicas; see the module docstring."""

    def __init__(
        self,
        shards: StreamShards,
        leases: LeaseStore,
        *,
        stream_arn: str,
        worker_id: str,
        handler: RecordHandler,
        config: StreamConfig,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`leases`: the shard leases (adapters.state_table.LeaseTable; a fake in tests);
        `clock` gives epoch seconds for lease times."""
        self._shards = shards
        self._worker_id = worker_id
        self._handler = handler
        self._config = config
        self._clock = clock
        self._leases = leases
        self._metrics = None if metrics is None else StreamMetrics.of(metrics)
        self._readers: dict[str, ShardReader] = {}
        self._wake = asyncio.Event()  # a reader ended, or stop: plan again now

    @property
    def lag_s(self) -> float | None:
        """Seconds behind the stream, over the shards held: the age of the oldest record read
        but not yet handled (so it grows while the handler fails), else how old the last batch
        was when handled (0 once a read finds the shard caught up). None before any record.
        """
        now_s = self._clock()
        known = [
            lag for reader in self._readers.values() if (lag := reader.lag_s(now_s)) is not None
        ]
        return max(known) if known else None

    @property
    def owned_shards(self) -> frozenset[str]:
        """Shards whose lease this replica holds now (for tests and status output)."""
        return frozenset(self._readers)

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

    async def _coordinate(self, stop: asyncio.Event, tasks: asyncio.TaskGroup) -> None:
        """Balance every `discover_every_s` (or when woken), renew every `renew_every_s`.

        After `stop`, keep renewing until every reader has finished its batch and released.
        """
        loop = asyncio.get_running_loop()
        next_discover = loop.time()
        next_renew = next_discover + self._config.renew_every_s
        while True:
            if stop.is_set():
                for reader in self._readers.values():
                    reader.held.stop.set()
                if not self._readers:
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
                for reader in list(self._readers.values()):  # a replica holds a few shards
                    await reader.held.renew()
                next_renew = loop.time() + self._config.renew_every_s
                continue
            self._report()
            await wait(self._wake, due - loop.time())

    async def _balance(self, tasks: asyncio.TaskGroup) -> None:
        """One round: list shards and leases, take our share, ask for more if short."""
        try:
            shards = await self._shards.shards()
            leases = await self._leases.read_all()
        except AwsUnavailable as exc:
            log.warning("stream.discover_failed", error=exc.reason)
            return
        ready = readable(shards, {shard_id: lease.checkpoint for shard_id, lease in leases.items()})
        decision = plan(
            ready,
            leases,
            me=self._worker_id,
            held=self._readers.keys(),
            now_ms=self._now_ms(),
            request_ttl_ms=self._config.lease_duration_ms,
        )
        for shard_id in decision.acquire:
            taken_at_s = self._clock()
            try:
                lease = await self._leases.acquire(shard_id, self._worker_id, self._now_ms())
            except AwsUnavailable as exc:
                log.warning("stream.acquire_failed", shard_id=shard_id, error=exc.reason)
                return
            if lease is not None:
                self._start(lease, taken_at_s, tasks)
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

    def _start(self, lease: Lease, taken_at_s: float, tasks: asyncio.TaskGroup) -> None:
        """A reader for a lease just taken, as a task of the consumer's group."""
        held = HeldLease(
            lease,
            self._leases,
            worker_id=self._worker_id,
            config=self._config,
            clock=self._clock,
            taken_at_s=taken_at_s,
        )
        reader = ShardReader(
            held,
            self._shards,
            self._handler,
            config=self._config,
            clock=self._clock,
            metrics=self._metrics,
        )
        self._readers[lease.shard_id] = reader
        tasks.create_task(self._read(reader), name=f"stream-shard-{lease.shard_id}")

    async def _read(self, reader: ShardReader) -> None:
        try:
            await reader.run()
        finally:
            self._readers.pop(reader.held.shard_id, None)
            self._wake.set()

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.shards.set(len(self._readers))
            lag = self.lag_s
            self._metrics.lag.set(0.0 if lag is None else lag)
