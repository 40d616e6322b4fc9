"""An in-memory DynamoDB stream and lease store, for consumer tests without AWS.

FakeStream implements the streams port (`userstore.worker.ports.StreamShards`: shards,
iterator, read) over shards held in memory, with the answers DynamoStreams gives (Unreadable for
an expired iterator, a trimmed position or a shard gone; AwsUnavailable for what AWS would keep
failing), and lets a test split and close shards, trim records, expire iterators and inject
failures. MemoryLeases implements LeaseStore with the same conditions as
worker.streams.leases.LeaseTable (tests/integration/test_streams_moto.py runs one contract
against both). `client_error` builds the botocore errors a stub client raises in adapter tests.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from userstore.worker.errors import AwsUnavailable
from userstore.worker.streams import (
    Lease,
    LeaseLost,
    Page,
    Shard,
    ShardIterator,
    StreamNotFound,
    StreamRecord,
    Unreadable,
)

STREAM_ARN = "arn:aws:dynamodb:eu-west-2:123456789012:table/users/stream/2026-01-01T00:00:00.000"


def client_error(code: str, operation: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} (fake)"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeShard:
    shard_id: str
    parent_id: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    trimmed: int = 0  # records at the head that retention has removed


@dataclass
class _Iterator:
    shard_id: str
    position: int  # index of the next record to return
    generation: int


class FakeStream:
    """One stream's shards and records, read through the streams port."""

    def __init__(self, *, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.exists = True  # False: the stream ARN names no stream
        self.by_id: dict[str, FakeShard] = {}
        self.calls: Counter[str] = Counter()
        self.raised: Counter[Unreadable] = Counter()
        self.read_failures: list[BaseException] = []
        self.describe_failures: list[BaseException] = []
        self._sequence = itertools.count(100_000_000_000_000_000_000, 7)
        self._iterators: dict[str, _Iterator] = {}
        self._generation = 0
        self._tokens = itertools.count()

    # -- test controls ------------------------------------------------------------------------

    def add_shard(self, shard_id: str, parent: str | None = None) -> None:
        self.by_id[shard_id] = FakeShard(shard_id, parent)

    def put(self, shard_id: str, key: str, event: str = "INSERT") -> str:
        """Append a record about item `key`; returns its sequence number."""
        shard = self.by_id[shard_id]
        assert not shard.closed, f"{shard_id} is closed"
        sequence = str(next(self._sequence))
        image = {"user_id": {"S": key}, "seq": {"N": sequence}}
        body: dict[str, Any] = {
            "ApproximateCreationDateTime": datetime.fromtimestamp(self.clock(), UTC),
            "Keys": {"user_id": {"S": key}},
            "SequenceNumber": sequence,
            "SizeBytes": 64,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if event != "REMOVE":
            body["NewImage"] = image
        if event != "INSERT":
            body["OldImage"] = image
        shard.records.append(
            {
                "eventID": f"e{sequence}",
                "eventName": event,
                "eventSource": "aws:dynamodb",
                "dynamodb": body,
            }
        )
        return sequence

    def close(self, shard_id: str) -> None:
        self.by_id[shard_id].closed = True

    def split(self, parent: str, *children: str) -> None:
        """Close `parent`; its records continue in `children` (one: a roll-over; two: a split)."""
        self.close(parent)
        for child in children:
            self.add_shard(child, parent)

    def trim(self, shard_id: str, count: int) -> None:
        """Retention removes the first `count` records of the shard."""
        shard = self.by_id[shard_id]
        shard.trimmed = max(shard.trimmed, min(count, len(shard.records)))

    def remove(self, shard_id: str) -> None:
        """The whole shard is past retention: gone from the listing."""
        del self.by_id[shard_id]

    def expire_iterators(self) -> None:
        self._generation += 1

    # -- the port -----------------------------------------------------------------------------

    async def shards(self) -> list[Shard]:
        self.calls["shards"] += 1
        await asyncio.sleep(0)
        if self.describe_failures:
            raise self.describe_failures.pop(0)
        if not self.exists:
            raise StreamNotFound("stream not found (ResourceNotFoundException)")
        return [Shard(shard.shard_id, shard.parent_id) for shard in self.by_id.values()]

    async def iterator(self, shard_id: str, after: str | None) -> ShardIterator | Unreadable:
        self.calls["iterator"] += 1
        await asyncio.sleep(0)
        shard = self.by_id.get(shard_id)
        if shard is None:
            return self._refuse(Unreadable.GONE)
        if after is None:
            position = shard.trimmed
        else:
            sequences = [record["dynamodb"]["SequenceNumber"] for record in shard.records]
            if after not in sequences:  # AWS: ValidationException, not one the adapter expects
                raise AwsUnavailable("GetShardIterator failed (ValidationException)")
            position = sequences.index(after) + 1
            if position < shard.trimmed:
                return self._refuse(Unreadable.TRIMMED)
        return self._issue(shard_id, position)

    async def read(self, iterator: ShardIterator, limit: int) -> Page | Unreadable:
        self.calls["read"] += 1
        await asyncio.sleep(0)
        if self.read_failures:
            raise self.read_failures.pop(0)
        issued = self._iterators.pop(iterator.token, None)
        if issued is None:  # moto: HTTP 500, retried, then AwsUnavailable
            raise AwsUnavailable("GetRecords failed (InternalFailure)")
        if issued.generation < self._generation:
            return self._refuse(Unreadable.EXPIRED)
        shard = self.by_id.get(issued.shard_id)
        if shard is None:
            return self._refuse(Unreadable.GONE)
        if issued.position < shard.trimmed:
            return self._refuse(Unreadable.TRIMMED)
        raw = shard.records[issued.position : issued.position + limit]
        end = issued.position + len(raw)
        following = None
        if not (shard.closed and end >= len(shard.records)):
            following = self._issue(shard.shard_id, end)
        records = tuple(StreamRecord.from_raw(record, shard.shard_id) for record in raw)
        return Page(records, following)

    def _refuse(self, why: Unreadable) -> Unreadable:
        self.raised[why] += 1
        return why

    def _issue(self, shard_id: str, position: int) -> ShardIterator:
        token = f"iterator-{next(self._tokens)}"
        self._iterators[token] = _Iterator(shard_id, position, self._generation)
        return ShardIterator(shard_id, token)


class MemoryLeases:
    """LeaseStore in memory, with LeaseTable's conditions. Each call checks and writes in one
    step before yielding, as one conditional UpdateItem does."""

    def __init__(self, lease_duration_s: float) -> None:
        self.items: dict[str, Lease] = {}
        self._lease_ms = round(lease_duration_s * 1000)
        self.writes: Counter[str] = Counter()

    async def read_all(self) -> dict[str, Lease]:
        found = dict(self.items)
        await asyncio.sleep(0)
        return found

    async def acquire(self, shard_id: str, worker_id: str, now_ms: int) -> Lease | None:
        current = self.items.get(shard_id)
        if current is not None:
            owner_ok = (
                current.owner is None
                or current.expires_at_ms <= now_ms
                or current.owner == worker_id
            )
            handoff_ok = (
                current.handoff_to is None
                or current.handoff_to == worker_id
                or current.handoff_at_ms <= now_ms - self._lease_ms
            )
            if not (owner_ok and handoff_ok):
                await asyncio.sleep(0)
                return None
        lease = Lease(
            shard_id=shard_id,
            owner=worker_id,
            counter=(current.counter if current else 0) + 1,
            expires_at_ms=now_ms + self._lease_ms,
            checkpoint=current.checkpoint if current else None,
            last_record_at=current.last_record_at if current else None,
        )
        self.items[shard_id] = lease
        self.writes["acquire"] += 1
        await asyncio.sleep(0)
        return lease

    def _owned(self, lease: Lease) -> Lease:
        current = self.items.get(lease.shard_id)
        if current is None or current.owner != lease.owner or current.counter != lease.counter:
            raise LeaseLost(f"lease of shard {lease.shard_id} lost")
        return current

    async def renew(
        self,
        lease: Lease,
        now_ms: int,
        *,
        checkpoint: str | None = None,
        last_record_at: datetime | None = None,
    ) -> Lease:
        try:
            current = self._owned(lease)
        except LeaseLost:
            await asyncio.sleep(0)
            raise
        renewed = replace(
            current,
            counter=current.counter + 1,
            expires_at_ms=now_ms + self._lease_ms,
            checkpoint=current.checkpoint if checkpoint is None else checkpoint,
            last_record_at=current.last_record_at if last_record_at is None else last_record_at,
        )
        self.items[lease.shard_id] = renewed
        self.writes["checkpoint" if checkpoint is not None else "renew"] += 1
        await asyncio.sleep(0)
        return renewed

    async def release(self, lease: Lease, now_ms: int) -> None:
        try:
            current = self._owned(lease)
        except LeaseLost:
            await asyncio.sleep(0)
            raise
        self.items[lease.shard_id] = replace(
            current, owner=None, counter=current.counter + 1, expires_at_ms=0
        )
        self.writes["release"] += 1
        await asyncio.sleep(0)

    async def request_handoff(self, lease: Lease, worker_id: str, now_ms: int) -> bool:
        current = self.items.get(lease.shard_id)
        granted = (
            current is not None
            and current.owner == lease.owner
            and current.expires_at_ms > now_ms
            and (
                current.handoff_to is None
                or current.handoff_to == worker_id
                or current.handoff_at_ms <= now_ms - self._lease_ms
            )
        )
        if granted and current is not None:
            self.items[lease.shard_id] = replace(
                current, handoff_to=worker_id, handoff_at_ms=now_ms
            )
            self.writes["request_handoff"] += 1
        await asyncio.sleep(0)
        return granted
