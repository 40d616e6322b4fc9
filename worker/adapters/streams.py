"""The DynamoDB Streams adapter: the only code that calls `dynamodbstreams`.

Implements `userstore.worker.ports.StreamShards` for one stream. DescribeStream's pages become
a list of shards; GetShardIterator and GetRecords become an iterator and a page of
StreamRecords. The refusals a reader has a remedy for become `Unreadable` (expired iterator,
trimmed position, shard gone); an unknown stream is StreamNotFound; everything else that keeps
failing is AwsUnavailable (from `aws.call`).
"""

from __future__ import annotations

from typing import Any

from ..aws import Refused, call
from ..streams.consumer import StreamNotFound
from ..streams.lineage import Shard
from ..streams.records import Page, ShardIterator, StreamRecord, Unreadable

_UNREADABLE = {
    "ExpiredIteratorException": Unreadable.EXPIRED,
    "TrimmedDataAccessException": Unreadable.TRIMMED,
    "ResourceNotFoundException": Unreadable.GONE,
}
_ITERATOR_REFUSALS = frozenset({"TrimmedDataAccessException", "ResourceNotFoundException"})
_READ_REFUSALS = frozenset(_UNREADABLE)


class DynamoStreams:
    """One stream (`stream_arn`) over an aiobotocore `dynamodbstreams` client."""

    def __init__(self, client: Any, stream_arn: str, *, max_attempts: int) -> None:
        self._client = client
        self._stream_arn = stream_arn
        self._max_attempts = max_attempts

    async def shards(self) -> list[Shard]:
        """Every shard of the stream, following DescribeStream's pages."""
        shards: list[Shard] = []
        start: str | None = None
        while True:
            extra = {} if start is None else {"ExclusiveStartShardId": start}
            try:
                response = await call(
                    "DescribeStream",
                    self._client.describe_stream,
                    max_attempts=self._max_attempts,
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

    async def iterator(self, shard_id: str, after: str | None) -> ShardIterator | Unreadable:
        if after is None:
            position: dict[str, str] = {"ShardIteratorType": "TRIM_HORIZON"}
        else:
            position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        try:
            response = await call(
                "GetShardIterator",
                self._client.get_shard_iterator,
                max_attempts=self._max_attempts,
                expected=_ITERATOR_REFUSALS,
                StreamArn=self._stream_arn,
                ShardId=shard_id,
                **position,
            )
        except Refused as exc:
            return _UNREADABLE[exc.code]
        return ShardIterator(shard_id, str(response["ShardIterator"]))

    async def read(self, iterator: ShardIterator, limit: int) -> Page | Unreadable:
        try:
            response = await call(
                "GetRecords",
                self._client.get_records,
                max_attempts=self._max_attempts,
                expected=_READ_REFUSALS,
                ShardIterator=iterator.token,
                Limit=limit,
            )
        except Refused as exc:
            return _UNREADABLE[exc.code]
        shard_id = iterator.shard_id
        following = response.get("NextShardIterator")
        return Page(
            tuple(StreamRecord.from_raw(raw, shard_id) for raw in response["Records"]),
            None if following is None else ShardIterator(shard_id, str(following)),
        )
