"""DynamoStreams over a stub `dynamodbstreams` client: what each botocore answer becomes.

moto can't expire an iterator, trim a shard or close one, so the translation of those codes is
checked here, table by table; tests/integration/test_streams_moto.py reads a real stream.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes.streams import STREAM_ARN, client_error
from userstore.worker.adapters.streams import DynamoStreams
from userstore.worker.errors import AwsUnavailable
from userstore.worker.streams import (
    EventName,
    Page,
    Shard,
    ShardIterator,
    StreamNotFound,
    Unreadable,
)

AT = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


class StubClient:
    """Answers each operation from a list: a response dict, or an exception to raise."""

    def __init__(self, **answers: list[Any]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        async def answer(**kwargs: Any) -> Any:
            self.requests.append((operation, kwargs))
            found = self.answers[operation].pop(0)
            if isinstance(found, BaseException):
                raise found
            return found

        return answer


def adapter(**answers: list[Any]) -> tuple[DynamoStreams, StubClient]:
    client = StubClient(**answers)
    return DynamoStreams(client, STREAM_ARN, max_attempts=2), client


def raw_record(sequence: str, event: str = "MODIFY") -> dict[str, Any]:
    return {
        "eventName": event,
        "dynamodb": {
            "ApproximateCreationDateTime": AT,
            "Keys": {"user_id": {"S": "k"}},
            "NewImage": {"user_id": {"S": "k"}},
            "SequenceNumber": sequence,
        },
    }


async def test_shards_follow_describe_stream_pages() -> None:
    def page(shards: list[dict[str, str]], last: str | None) -> dict[str, Any]:
        description: dict[str, Any] = {"Shards": shards}
        if last:
            description["LastEvaluatedShardId"] = last
        return {"StreamDescription": description}

    streams, client = adapter(
        describe_stream=[
            page([{"ShardId": "P"}, {"ShardId": "A", "ParentShardId": "P"}], "A"),
            page([{"ShardId": "B", "ParentShardId": "P"}], None),
        ]
    )
    assert await streams.shards() == [Shard("P"), Shard("A", "P"), Shard("B", "P")]
    assert [kwargs for _, kwargs in client.requests] == [
        {"StreamArn": STREAM_ARN},
        {"StreamArn": STREAM_ARN, "ExclusiveStartShardId": "A"},
    ]


async def test_an_unknown_stream_is_stream_not_found() -> None:
    streams, _ = adapter(
        describe_stream=[client_error("ResourceNotFoundException", "DescribeStream")]
    )
    with pytest.raises(StreamNotFound):
        await streams.shards()


@pytest.mark.parametrize(
    ("after", "position"),
    [
        (None, {"ShardIteratorType": "TRIM_HORIZON"}),
        ("42", {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": "42"}),
    ],
)
async def test_an_iterator_starts_after_the_position_or_at_the_trim_horizon(
    after: str | None, position: dict[str, str]
) -> None:
    streams, client = adapter(get_shard_iterator=[{"ShardIterator": "token"}])
    assert await streams.iterator("S", after) == ShardIterator("S", "token")
    assert client.requests == [
        ("get_shard_iterator", {"StreamArn": STREAM_ARN, "ShardId": "S", **position})
    ]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("TrimmedDataAccessException", Unreadable.TRIMMED),
        ("ResourceNotFoundException", Unreadable.GONE),
    ],
)
async def test_iterator_refusals_become_unreadable(code: str, expected: Unreadable) -> None:
    streams, _ = adapter(get_shard_iterator=[client_error(code, "GetShardIterator")])
    assert await streams.iterator("S", "42") is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ExpiredIteratorException", Unreadable.EXPIRED),
        ("TrimmedDataAccessException", Unreadable.TRIMMED),
        ("ResourceNotFoundException", Unreadable.GONE),
    ],
)
async def test_read_refusals_become_unreadable(code: str, expected: Unreadable) -> None:
    streams, _ = adapter(get_records=[client_error(code, "GetRecords")])
    assert await streams.read(ShardIterator("S", "token"), 10) is expected


@pytest.mark.parametrize(
    "error",
    [
        client_error("ValidationException", "GetRecords"),
        client_error("InternalServerError", "GetRecords", status=500),  # moto: unknown iterator
    ],
)
async def test_other_failures_are_aws_unavailable(error: Exception) -> None:
    streams, _ = adapter(get_records=[error, error])
    with pytest.raises(AwsUnavailable):
        await streams.read(ShardIterator("S", "token"), 10)


async def test_a_page_holds_stream_records_of_the_iterators_shard() -> None:
    streams, client = adapter(
        get_records=[
            {"Records": [raw_record("1"), raw_record("2", "REMOVE")], "NextShardIterator": "n"},
            {"Records": []},  # closed and read to its end
        ]
    )
    page = await streams.read(ShardIterator("S", "token"), 2)
    assert isinstance(page, Page)
    assert [(r.sequence_number, r.event_name, r.shard_id) for r in page.records] == [
        ("1", EventName.MODIFY, "S"),
        ("2", EventName.REMOVE, "S"),
    ]
    assert page.records[0].approximate_created_at == AT
    assert page.next_iterator == ShardIterator("S", "n")
    assert client.requests[0] == ("get_records", {"ShardIterator": "token", "Limit": 2})
    assert await streams.read(ShardIterator("S", "n"), 2) == Page((), None)
