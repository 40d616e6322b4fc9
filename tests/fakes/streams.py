"""An in-memory DynamoDB stream and lease store, for consumer tests without AWS.

FakeStream implements the calls StreamConsumer makes of an aiobotocore `dynamodbstreams` client
(describe_stream, get_shard_iterator, get_records: coroutines returning the same dict shapes,
raising botocore ClientError with the same codes) and lets a test split and close shards, trim
records, expire iterators and inject failures. MemoryLeases implements LeaseStore with the same
conditions as worker.streams.leases.LeaseTable (tests/integration/test_streams_moto.py runs one
contract against both).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from userstore.worker.streams import Lease, LeaseLost

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
    first_sequence: int
    records: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    trimmed: int = 0  # records at the head that retention has removed


@dataclass
class _Iterator:
    shard_id: str
    position: int  # index of the next record to return
    generation: int


class FakeStream:
    """One stream's shards and records; also the streams client the consumer calls."""

    def __init__(
        self, arn: str = STREAM_ARN, *, clock: FakeClock | None = None, page_size: int = 2
    ) -> None:
        self.arn = arn
        self.clock = clock or FakeClock()
        self.page_size = page_size  # DescribeStream page size, small to exercise pagination
        self.shards: dict[str, FakeShard] = {}
        self.calls: Counter[str] = Counter()
        self.raised: Counter[str] = Counter()
        self.get_records_failures: list[BaseException] = []
        self.describe_failures: list[BaseException] = []
        self._sequence = itertools.count(100_000_000_000_000_000_000, 7)
        self._iterators: dict[str, _Iterator] = {}
        self._generation = 0
        self._tokens = itertools.count()

    # -- test controls ------------------------------------------------------------------------

    def add_shard(self, shard_id: str, parent: str | None = None) -> None:
        self.shards[shard_id] = FakeShard(shard_id, parent, next(self._sequence))

    def put(self, shard_id: str, key: str, event: str = "INSERT") -> str:
        """Append a record about item `key`; returns its sequence number."""
        shard = self.shards[shard_id]
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
        self.shards[shard_id].closed = True

    def split(self, parent: str, *children: str) -> None:
        """Close `parent`; its records continue in `children` (one: a roll-over; two: a split)."""
        self.close(parent)
        for child in children:
            self.add_shard(child, parent)

    def trim(self, shard_id: str, count: int) -> None:
        """Retention removes the first `count` records of the shard."""
        shard = self.shards[shard_id]
        shard.trimmed = max(shard.trimmed, min(count, len(shard.records)))

    def remove(self, shard_id: str) -> None:
        """The whole shard is past retention: gone from the listing."""
        del self.shards[shard_id]

    def expire_iterators(self) -> None:
        self._generation += 1

    # -- the client ---------------------------------------------------------------------------

    async def describe_stream(
        self, *, StreamArn: str, ExclusiveStartShardId: str | None = None, Limit: int = 100
    ) -> dict[str, Any]:
        self.calls["describe_stream"] += 1
        await asyncio.sleep(0)
        if self.describe_failures:
            raise self.describe_failures.pop(0)
        if StreamArn != self.arn:
            raise client_error("ResourceNotFoundException", "DescribeStream")
        ids = list(self.shards)
        start = ids.index(ExclusiveStartShardId) + 1 if ExclusiveStartShardId else 0
        page = ids[start : start + min(Limit, self.page_size)]
        description: dict[str, Any] = {
            "StreamArn": self.arn,
            "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "Shards": [self._describe(self.shards[shard_id]) for shard_id in page],
        }
        if start + len(page) < len(ids):
            description["LastEvaluatedShardId"] = page[-1]
        return {"StreamDescription": description}

    def _describe(self, shard: FakeShard) -> dict[str, Any]:
        described: dict[str, Any] = {
            "ShardId": shard.shard_id,
            "SequenceNumberRange": {"StartingSequenceNumber": str(shard.first_sequence)},
        }
        if shard.parent_id is not None:
            described["ParentShardId"] = shard.parent_id
        if shard.closed:
            last = shard.records[-1]["dynamodb"]["SequenceNumber"] if shard.records else "0"
            described["SequenceNumberRange"]["EndingSequenceNumber"] = last
        return described

    async def get_shard_iterator(
        self,
        *,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
    ) -> dict[str, Any]:
        self.calls["get_shard_iterator"] += 1
        await asyncio.sleep(0)
        shard = self.shards.get(ShardId)
        if StreamArn != self.arn or shard is None:
            raise client_error("ResourceNotFoundException", "GetShardIterator")
        if ShardIteratorType == "TRIM_HORIZON":
            position = shard.trimmed
        elif ShardIteratorType == "LATEST":
            position = len(shard.records)
        else:
            sequences = [record["dynamodb"]["SequenceNumber"] for record in shard.records]
            if SequenceNumber not in sequences:
                raise client_error("ValidationException", "GetShardIterator")
            position = sequences.index(SequenceNumber)
            position += 1 if ShardIteratorType == "AFTER_SEQUENCE_NUMBER" else 0
            if position < shard.trimmed:
                self.raised["TrimmedDataAccessException"] += 1
                raise client_error("TrimmedDataAccessException", "GetShardIterator")
        return {"ShardIterator": self._issue(ShardId, position)}

    def _issue(self, shard_id: str, position: int) -> str:
        token = f"iterator-{next(self._tokens)}"
        self._iterators[token] = _Iterator(shard_id, position, self._generation)
        return token

    async def get_records(self, *, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:
        self.calls["get_records"] += 1
        await asyncio.sleep(0)
        if self.get_records_failures:
            raise self.get_records_failures.pop(0)
        iterator = self._iterators.pop(ShardIterator, None)
        if iterator is None:
            raise client_error("ValidationException", "GetRecords")
        if iterator.generation < self._generation:
            self.raised["ExpiredIteratorException"] += 1
            raise client_error("ExpiredIteratorException", "GetRecords")
        shard = self.shards.get(iterator.shard_id)
        if shard is None:
            raise client_error("ResourceNotFoundException", "GetRecords")
        if iterator.position < shard.trimmed:
            self.raised["TrimmedDataAccessException"] += 1
            raise client_error("TrimmedDataAccessException", "GetRecords")
        records = shard.records[iterator.position : iterator.position + Limit]
        end = iterator.position + len(records)
        response: dict[str, Any] = {"Records": [dict(record) for record in records]}
        if not (shard.closed and end >= len(shard.records)):
            response["NextShardIterator"] = self._issue(shard.shard_id, end)
        return response


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
