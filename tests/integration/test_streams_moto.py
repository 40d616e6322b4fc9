"""The stream consumer and its lease table against a moto server process.

moto has exactly one shard per stream, never split or closed (lineage is covered by the unit
tests with a fake stream). The lease contract runs against both LeaseTable on moto and the
in-memory MemoryLeases the unit tests use, and the streams port contract against both
DynamoStreams on moto and the in-memory FakeStream, so the fakes can't drift from the real thing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from tests.fakes.streams import FakeStream, MemoryLeases
from userstore.worker.adapters.state_table import LeaseTable, read_progress
from userstore.worker.adapters.streams import DynamoStreams
from userstore.worker.aws import client_config
from userstore.worker.errors import AwsUnavailable
from userstore.worker.ports import StreamShards
from userstore.worker.streams import (
    LEASE_TABLE_SPEC,
    EventName,
    LeaseLost,
    LeaseStore,
    Page,
    ShardIterator,
    StreamConfig,
    StreamConsumer,
    StreamNotFound,
    StreamRecord,
    Unreadable,
)

CONFIG = StreamConfig(
    lease_duration_s=3,
    renew_every_s=0.5,
    discover_every_s=0.2,
    poll_idle_s=0.1,
    max_records=20,
    max_attempts=3,
    retry_base_s=0.05,
    retry_max_s=0.5,
)


@asynccontextmanager
async def aws(endpoint: str) -> AsyncIterator[tuple[Any, Any]]:
    """(dynamodb, dynamodbstreams) clients, configured as worker/app.py does."""
    session = get_session()
    kwargs: dict[str, Any] = {
        "region_name": "eu-west-2",
        "endpoint_url": endpoint,
        "config": client_config(10),
    }
    async with (
        session.create_client("dynamodb", **kwargs) as ddb,
        session.create_client("dynamodbstreams", **kwargs) as streams,
    ):
        yield ddb, streams


async def create_tables(ddb: Any) -> tuple[str, str, str]:
    """A users table with a NEW_AND_OLD_IMAGES stream and a lease table: (users, arn, leases)."""
    tag = uuid.uuid4().hex[:10]
    users, leases = f"users-{tag}", f"leases-{tag}"
    created = await ddb.create_table(
        TableName=users,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    await ddb.create_table(TableName=leases, BillingMode="PAY_PER_REQUEST", **LEASE_TABLE_SPEC)
    return users, str(created["TableDescription"]["LatestStreamArn"]), leases


async def put_users(ddb: Any, table: str, prefix: str, count: int) -> list[str]:
    keys = [f"{prefix}{index:03d}" for index in range(count)]
    for key in keys:
        await ddb.put_item(
            TableName=table, Item={"user_id": {"S": key}, "sealed": {"B": b"\x00ciphertext"}}
        )
    return keys


class Seen:
    """A handler collecting user ids and sequence numbers (the test's own, not logged)."""

    def __init__(self) -> None:
        self.records: list[StreamRecord] = []

    async def __call__(self, records: Sequence[StreamRecord]) -> None:
        self.records.extend(records)

    @property
    def keys(self) -> set[str]:
        return {str(record.keys["user_id"]["S"]) for record in self.records}

    @property
    def sequences(self) -> list[str]:
        return [record.sequence_number for record in self.records]


def consumer(
    clients: tuple[Any, Any], arn: str, leases: str, worker_id: str, handler: Seen
) -> StreamConsumer:
    ddb, streams = clients
    return StreamConsumer(
        DynamoStreams(streams, arn, max_attempts=CONFIG.max_attempts),
        LeaseTable(
            ddb,
            leases,
            stream_arn=arn,
            lease_duration_s=CONFIG.lease_duration_s,
            max_attempts=CONFIG.max_attempts,
        ),
        stream_arn=arn,
        worker_id=worker_id,
        handler=handler,
        config=CONFIG,
    )


async def eventually(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - the state belongs to other tasks
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(*consumers: StreamConsumer) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(each.run(stop)) for each in consumers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


async def test_reads_every_item_then_a_restart_resumes_after_the_checkpoint(
    moto_endpoint: str,
) -> None:
    async with aws(moto_endpoint) as clients:
        ddb, _ = clients
        users, arn, leases = await create_tables(ddb)
        first_keys = await put_users(ddb, users, "u", 50)
        first = Seen()
        async with running(consumer(clients, arn, leases, "w1", first)):
            await eventually(lambda: first.keys >= set(first_keys))
        assert len(first.sequences) == len(set(first.sequences)) == 50

        [progress] = await read_progress(ddb, leases, arn)
        assert progress.owner is None  # released on stop
        assert progress.expired
        assert progress.checkpoint == first.sequences[-1]
        assert progress.last_record_at == first.records[-1].approximate_created_at

        later_keys = await put_users(ddb, users, "v", 10)
        second = Seen()
        async with running(consumer(clients, arn, leases, "w2", second)):
            await eventually(lambda: second.keys >= set(later_keys))
            await asyncio.sleep(3 * CONFIG.poll_idle_s)
        assert second.keys == set(later_keys)  # nothing from before the stop
        assert len(second.records) == 10


async def test_two_replicas_share_the_single_shard_then_one_takes_over(
    moto_endpoint: str,
) -> None:
    """B starts once A holds the shard: moto does not serialise conditional writes to one item
    (two simultaneous UpdateItems creating it both succeed), so a simultaneous start would test
    moto. The unit tests start replicas together against an atomic in-memory lease store.
    """
    async with aws(moto_endpoint) as clients:
        ddb, _ = clients
        users, arn, leases = await create_tables(ddb)
        keys = await put_users(ddb, users, "u", 30)
        a, b = Seen(), Seen()
        replica_a = consumer(clients, arn, leases, "a", a)
        replica_b = consumer(clients, arn, leases, "b", b)
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        task_a = asyncio.create_task(replica_a.run(stop_a))
        task_b: asyncio.Task[None] | None = None
        try:
            await eventually(lambda: bool(replica_a.owned_shards))
            task_b = asyncio.create_task(replica_b.run(stop_b))
            await eventually(lambda: (a.keys | b.keys) >= set(keys))
            await asyncio.sleep(3 * CONFIG.discover_every_s)  # time for B to misbehave
            assert replica_a.owned_shards
            assert not replica_b.owned_shards
            assert b.records == []
            assert len(a.sequences) == len(set(a.sequences)) == 30

            stop_a.set()  # A stops: its lease is released and B takes over at once
            await asyncio.wait_for(task_a, 15)
            more = await put_users(ddb, users, "v", 5)
            await eventually(lambda: b.keys >= set(more))
            assert b.keys == set(more)
            handled = a.sequences + b.sequences
            assert len(handled) == len(set(handled)) == 35
        finally:
            stop_a.set()
            stop_b.set()
            await asyncio.wait_for(asyncio.gather(task_a, *([task_b] if task_b else [])), 15)
        assert all(p.owner is None for p in await read_progress(ddb, leases, arn))


# -- the streams port contract: DynamoStreams on moto and the in-memory FakeStream ------------

Put = Callable[[list[str]], Awaitable[None]]


@pytest.fixture(params=["moto", "memory"])
async def port(
    request: pytest.FixtureRequest, moto_endpoint: str
) -> AsyncIterator[tuple[StreamShards, Put]]:
    """The port, and how to write items whose changes it then lists (one shard, as on moto)."""
    if request.param == "memory":
        fake = FakeStream()
        fake.add_shard("shard-1")

        async def put_fake(keys: list[str]) -> None:
            for key in keys:
                fake.put("shard-1", key)

        yield fake, put_fake
        return
    async with aws(moto_endpoint) as (ddb, streams):
        users, arn, _ = await create_tables(ddb)

        async def put_moto(keys: list[str]) -> None:
            for key in keys:
                await ddb.put_item(TableName=users, Item={"user_id": {"S": key}})

        yield DynamoStreams(streams, arn, max_attempts=2), put_moto


def user_ids(page: Page | Unreadable) -> list[str]:
    assert isinstance(page, Page)
    return [str(record.keys["user_id"]["S"]) for record in page.records]


async def test_pages_of_records_from_the_trim_horizon_then_after_a_sequence_number(
    port: tuple[StreamShards, Put],
) -> None:
    streams, put = port
    keys = [f"u{index}" for index in range(5)]
    await put(keys)
    [shard] = await streams.shards()
    assert shard.parent_id is None
    start = await streams.iterator(shard.shard_id, None)
    assert isinstance(start, ShardIterator)
    first = await streams.read(start, 3)
    assert user_ids(first) == keys[:3]
    assert isinstance(first, Page)
    assert {(r.event_name, r.shard_id) for r in first.records} == {
        (EventName.INSERT, shard.shard_id)
    }
    assert first.next_iterator is not None  # the shard is open

    after = await streams.iterator(shard.shard_id, first.records[-1].sequence_number)
    assert isinstance(after, ShardIterator)
    assert user_ids(await streams.read(after, 100)) == keys[3:]
    with pytest.raises(AwsUnavailable):  # moto: HTTP 500 for an iterator it doesn't know
        await streams.read(ShardIterator(shard.shard_id, "x" * 40), 10)


async def test_an_unknown_stream_is_stream_not_found(moto_endpoint: str) -> None:
    async with aws(moto_endpoint) as (ddb, streams):
        users, arn, _ = await create_tables(ddb)
        with pytest.raises(StreamNotFound):
            await DynamoStreams(streams, arn.replace(users, "nope"), max_attempts=2).shards()


async def test_moto_answers_an_unknown_iterator_with_http_500(moto_endpoint: str) -> None:
    """Why the consumer treats GetRecords failing after retries like an expired iterator."""
    async with aws(moto_endpoint) as (ddb, streams):
        _, arn, _ = await create_tables(ddb)
        adapter = DynamoStreams(streams, arn, max_attempts=2)
        [shard] = await adapter.shards()
        with pytest.raises(AwsUnavailable) as raised:
            await adapter.read(ShardIterator(shard.shard_id, "x" * 40), 10)
        cause = raised.value.__cause__
        assert isinstance(cause, ClientError)
        assert cause.response["ResponseMetadata"]["HTTPStatusCode"] == 500


# -- the lease contract: LeaseTable on moto and the in-memory fake ------------------------------

NOW = 1_800_000_000_000
DURATION_MS = 30_000


@pytest.fixture(params=["moto", "memory"])
async def store(request: pytest.FixtureRequest, moto_endpoint: str) -> AsyncIterator[LeaseStore]:
    if request.param == "memory":
        yield MemoryLeases(DURATION_MS / 1000)
        return
    async with aws(moto_endpoint) as (ddb, _):
        _, arn, leases = await create_tables(ddb)
        yield LeaseTable(
            ddb, leases, stream_arn=arn, lease_duration_s=DURATION_MS / 1000, max_attempts=3
        )


async def test_lease_taken_by_one_replica_only_until_it_expires(store: LeaseStore) -> None:
    mine = await store.acquire("s1", "a", NOW)
    assert mine is not None
    assert (mine.owner, mine.counter, mine.expires_at_ms) == ("a", 1, NOW + DURATION_MS)
    assert await store.acquire("s1", "b", NOW + DURATION_MS - 1) is None
    again = await store.acquire("s1", "a", NOW + 1)  # already ours
    assert again is not None
    assert again.counter == 2

    taken = await store.acquire("s1", "b", NOW + 1 + DURATION_MS)  # expired: takeover
    assert taken is not None
    assert (taken.owner, taken.counter) == ("b", 3)
    with pytest.raises(LeaseLost):  # the paused owner finds out on its next write
        await store.renew(again, NOW + 2 + DURATION_MS)
    with pytest.raises(LeaseLost):
        await store.renew(again, NOW + 2 + DURATION_MS, checkpoint="100")
    with pytest.raises(LeaseLost):
        await store.release(again, NOW + 2 + DURATION_MS)
    assert (await store.read_all())["s1"].checkpoint is None


async def test_checkpoints_are_fenced_by_the_counter_and_survive_release(
    store: LeaseStore,
) -> None:
    lease = await store.acquire("s1", "a", NOW)
    assert lease is not None
    at = datetime(2026, 11, 28, 10, 0, 0, 123000, tzinfo=UTC)
    renewed = await store.renew(lease, NOW + 10, checkpoint="1000017", last_record_at=at)
    assert (renewed.counter, renewed.checkpoint, renewed.last_record_at) == (2, "1000017", at)
    assert renewed.expires_at_ms == NOW + 10 + DURATION_MS
    with pytest.raises(LeaseLost):  # a stale copy of our own lease: someone wrote since
        await store.renew(lease, NOW + 20, checkpoint="1000099")
    kept = await store.renew(renewed, NOW + 20)
    assert (kept.checkpoint, kept.last_record_at) == ("1000017", at)

    await store.release(kept, NOW + 30)
    released = (await store.read_all())["s1"]
    assert (released.owner, released.checkpoint, released.expires_at_ms) == (None, "1000017", 0)
    successor = await store.acquire("s1", "b", NOW + 40)
    assert successor is not None
    assert (successor.owner, successor.checkpoint) == ("b", "1000017")


async def test_handoff_request_reserves_the_released_lease_for_the_requester(
    store: LeaseStore,
) -> None:
    lease = await store.acquire("s1", "a", NOW)
    assert lease is not None
    assert await store.request_handoff(lease, "b", NOW + 1)
    assert not await store.request_handoff(lease, "c", NOW + 2)  # b's request stands
    renewed = await store.renew(lease, NOW + 3)  # requests don't disturb the owner's fencing
    assert (renewed.handoff_to, renewed.handoff_at_ms) == ("b", NOW + 1)
    assert renewed.handoff_requested("a", NOW + 3, DURATION_MS)

    await store.release(renewed, NOW + 4)
    assert await store.acquire("s1", "c", NOW + 5) is None  # reserved for b
    taken = await store.acquire("s1", "b", NOW + 6)
    assert taken is not None
    assert (taken.owner, taken.handoff_to) == ("b", None)

    late = await store.acquire("s2", "a", NOW)
    assert late is not None
    assert await store.request_handoff(late, "b", NOW + 1)
    await store.release(late, NOW + 2)
    assert not await store.request_handoff(late, "c", NOW + 3)  # no owner: nothing to ask
    stale = await store.acquire("s2", "c", NOW + 1 + DURATION_MS)  # b's request went stale
    assert stale is not None
    assert stale.owner == "c"


async def test_read_progress_reports_each_shard_of_one_stream_only(moto_endpoint: str) -> None:
    async with aws(moto_endpoint) as (ddb, _):
        _, arn, leases = await create_tables(ddb)
        table = LeaseTable(ddb, leases, stream_arn=arn, lease_duration_s=30, max_attempts=3)
        other = LeaseTable(
            ddb, leases, stream_arn=arn + "-other", lease_duration_s=30, max_attempts=3
        )
        at = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
        now_s = 1_800_000_000.0
        held = await table.acquire("shard-b", "a", round(now_s * 1000))
        assert held is not None
        await table.renew(held, round(now_s * 1000), checkpoint="42", last_record_at=at)
        assert await table.acquire("shard-a", "z", round((now_s - 60) * 1000)) is not None
        assert await other.acquire("shard-c", "a", round(now_s * 1000)) is not None

        progress = await read_progress(ddb, leases, arn, now_s=now_s + 1)
    assert [(p.shard_id, p.owner, p.checkpoint, p.last_record_at, p.expired) for p in progress] == [
        ("shard-a", "z", None, None, True),
        ("shard-b", "a", "42", at, False),
    ]
