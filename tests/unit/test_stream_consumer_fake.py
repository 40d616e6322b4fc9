"""StreamConsumer against the in-memory streams port and lease store: no AWS.

Leases are judged by an injected clock that moves only when a test advances it; the loops run
on short real intervals. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
import structlog

import userstore.worker.streams.consumer as consumer_module
import userstore.worker.streams.held as held_module
import userstore.worker.streams.reader as reader_module
from tests.fakes.streams import STREAM_ARN, FakeClock, FakeStream, MemoryLeases
from userstore.worker.errors import AwsUnavailable
from userstore.worker.metrics import Metrics
from userstore.worker.streams import (
    SHARD_END,
    StreamConfig,
    StreamConsumer,
    StreamNotFound,
    StreamRecord,
    Unreadable,
)

CONFIG = StreamConfig(
    lease_duration_s=30,
    renew_every_s=0.05,
    discover_every_s=0.05,
    poll_idle_s=0.01,
    checkpoint_every_s=0,  # every batch: the tests below read the checkpoint after each
    max_records=3,
    max_attempts=2,
    retry_base_s=0.01,
    retry_max_s=0.05,
)
SECRET = "Zebedee-Personal-42"


class Recorder:
    """A handler that records what it was given; can be told to fail, or to hang on a batch."""

    def __init__(self, *, hang_at: int | None = None) -> None:
        self.batches: list[list[StreamRecord]] = []
        self.fail_next = 0
        self.hang_at = hang_at  # this batch (1-based) waits for `resume`
        self.resume = asyncio.Event()

    async def __call__(self, records: Sequence[StreamRecord]) -> None:
        self.batches.append(list(records))
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError(f"handler broke on {SECRET}")
        if len(self.batches) == self.hang_at:
            await self.resume.wait()

    @property
    def sequences(self) -> list[str]:
        return [record.sequence_number for batch in self.batches for record in batch]

    def by_shard(self) -> dict[str, list[str]]:
        shards: dict[str, list[str]] = {}
        for batch in self.batches:
            for record in batch:
                shards.setdefault(record.shard_id, []).append(record.sequence_number)
        return shards


class Running:
    """A consumer's `run` as a task: stop it gracefully, or kill it (a replica dying)."""

    def __init__(self, consumer: StreamConsumer) -> None:
        self.consumer = consumer
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(consumer.run(self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 5)

    async def kill(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 5)


@asynccontextmanager
async def running(consumer: StreamConsumer) -> AsyncIterator[Running]:
    run = Running(consumer)
    try:
        yield run
    finally:
        if not run.task.done():
            await run.stop()


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - the state belongs to other tasks
            await asyncio.sleep(0.005)


def make(
    stream: FakeStream,
    leases: MemoryLeases,
    handler: Recorder,
    worker_id: str = "w1",
    config: StreamConfig = CONFIG,
    metrics: Metrics | None = None,
) -> StreamConsumer:
    return StreamConsumer(
        stream,
        leases,
        stream_arn=STREAM_ARN,
        worker_id=worker_id,
        handler=handler,
        config=config,
        metrics=metrics,
        clock=stream.clock,
    )


@pytest.fixture
def stream() -> FakeStream:
    return FakeStream(clock=FakeClock())


@pytest.fixture
def leases() -> MemoryLeases:
    return MemoryLeases(CONFIG.lease_duration_s)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """Log entries of the consumer (a fresh logger, whatever structlog caching is set up)."""
    with structlog.testing.capture_logs() as captured:
        for module in (consumer_module, reader_module, held_module):
            monkeypatch.setattr(module, "log", structlog.get_logger("userstore.streams"))
        yield captured


def fill(stream: FakeStream, shard_id: str, count: int, prefix: str = "u") -> list[str]:
    return [stream.put(shard_id, f"{prefix}{shard_id}-{i}") for i in range(count)]


async def test_parents_are_read_to_the_end_before_their_children(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    # Listed children first, so nothing relies on DescribeStream's order.
    stream.add_shard("A2", "A")
    stream.add_shard("B", "P")
    stream.add_shard("A", "P")
    stream.add_shard("P")
    parent = fill(stream, "P", 5)
    stream.close("P")
    left = fill(stream, "A", 4)
    stream.close("A")
    right = fill(stream, "B", 2)
    grandchild = fill(stream, "A2", 3)
    handler = Recorder()
    async with running(make(stream, leases, handler)):
        await eventually(lambda: len(handler.sequences) == 14)

    order = handler.sequences
    assert sorted(order) == sorted(parent + left + right + grandchild)  # each exactly once
    assert order[:5] == parent
    assert max(order.index(s) for s in left) < min(order.index(s) for s in grandchild)
    assert handler.by_shard() == {"P": parent, "A": left, "B": right, "A2": grandchild}
    assert leases.items["P"].checkpoint == SHARD_END
    assert leases.items["A"].checkpoint == SHARD_END
    assert leases.items["B"].checkpoint == right[-1]
    assert all(lease.owner is None for lease in leases.items.values())  # released on stop


async def test_a_restart_resumes_after_the_checkpoint(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    first = fill(stream, "S", 7)
    before = Recorder()
    async with running(make(stream, leases, before, "w1")):
        await eventually(lambda: len(before.sequences) == 7)
    assert leases.items["S"].checkpoint == first[-1]
    assert leases.items["S"].owner is None

    later = fill(stream, "S", 3, prefix="v")
    after = Recorder()
    async with running(make(stream, leases, after, "w2")):  # another replica, at once
        await eventually(lambda: len(after.sequences) == 3)
        await asyncio.sleep(0.05)
    assert before.sequences == first
    assert after.sequences == later


async def test_a_crash_before_the_checkpoint_redelivers_only_that_batch(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    records = fill(stream, "S", 8)
    crashing = Recorder(hang_at=3)  # the third batch is handed over, then the process dies
    run = Running(make(stream, leases, crashing, "w1"))
    try:
        await eventually(lambda: len(crashing.batches) == 3)
    finally:
        await run.kill()
    assert leases.items["S"].checkpoint == records[5]
    assert leases.items["S"].owner == "w1"  # not released: it died

    restarted = Recorder()
    async with running(make(stream, leases, restarted, "w1")):  # same id: its lease, at once
        await eventually(lambda: len(restarted.sequences) == 2)
    assert crashing.sequences == records
    assert restarted.sequences == records[6:]  # the third batch (records 6, 7) again


async def test_an_expired_iterator_is_replaced_from_the_checkpoint(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    records = fill(stream, "S", 4)
    handler = Recorder()
    async with running(make(stream, leases, handler)):
        await eventually(lambda: len(handler.sequences) == 4)
        created = stream.calls["iterator"]
        stream.expire_iterators()
        records += fill(stream, "S", 4, prefix="v")
        await eventually(lambda: len(handler.sequences) == 8)
    assert stream.raised[Unreadable.EXPIRED] >= 1
    assert stream.calls["iterator"] > created
    assert handler.sequences == records


async def test_get_records_failing_after_retries_starts_again_from_the_checkpoint(
    stream: FakeStream, leases: MemoryLeases, logs: list[MutableMapping[str, Any]]
) -> None:
    """moto answers HTTP 500 (HTML) for an iterator it doesn't know: like an expired one."""
    stream.add_shard("S")
    records = fill(stream, "S", 4)
    handler = Recorder()
    async with running(make(stream, leases, handler)):
        await eventually(lambda: len(handler.sequences) == 4)
        created = stream.calls["iterator"]
        stream.read_failures.append(AwsUnavailable("GetRecords failed (500)"))
        await eventually(lambda: not stream.read_failures)
        records += fill(stream, "S", 2, prefix="v")
        await eventually(lambda: len(handler.sequences) == 6)
    assert handler.sequences == records
    assert stream.calls["iterator"] > created
    failed = [entry for entry in logs if entry["event"] == "stream.read_failed"]
    assert failed
    assert failed[0]["shard_id"] == "S"
    assert failed[0]["log_level"] == "warning"


async def test_a_trimmed_checkpoint_restarts_from_the_trim_horizon_with_a_warning(
    stream: FakeStream, leases: MemoryLeases, logs: list[MutableMapping[str, Any]]
) -> None:
    stream.add_shard("S")
    first = fill(stream, "S", 3)
    handler = Recorder()
    async with running(make(stream, leases, handler)):
        await eventually(lambda: len(handler.sequences) == 3)
    later = fill(stream, "S", 4, prefix="v")
    stream.trim("S", 5)  # past the checkpoint (record 3): records 4 and 5 are lost

    resumed = Recorder()
    async with running(make(stream, leases, resumed)):
        await eventually(lambda: len(resumed.sequences) == 2)
        await asyncio.sleep(0.05)
    assert handler.sequences == first
    assert resumed.sequences == later[2:]
    trimmed = [entry for entry in logs if entry["event"] == "stream.trimmed"]
    assert trimmed == [{"event": "stream.trimmed", "shard_id": "S", "log_level": "warning"}]
    assert leases.items["S"].checkpoint == later[-1]


async def test_a_failing_handler_gets_the_same_batch_again_and_nothing_is_checkpointed(
    stream: FakeStream, leases: MemoryLeases, logs: list[MutableMapping[str, Any]]
) -> None:
    stream.add_shard("S")
    records = fill(stream, "S", 3)
    metrics = Metrics()
    handler = Recorder()
    handler.fail_next = 1_000_000  # until told otherwise
    consumer = make(stream, leases, handler, metrics=metrics)
    assert consumer.lag_s is None
    async with running(consumer):
        await eventually(lambda: len(handler.batches) >= 3)
        assert leases.items["S"].checkpoint is None
        stream.clock.advance(5)
        lag = consumer.lag_s
        assert lag is not None
        assert lag >= 5  # grows while the batch keeps failing
        handler.fail_next = 0
        await eventually(
            lambda: "S" in leases.items and leases.items["S"].checkpoint == records[-1]
        )
    assert all([r.sequence_number for r in batch] == records for batch in handler.batches)
    failures = [entry for entry in logs if entry["event"] == "stream.batch_failed"]
    assert len(failures) == len(handler.batches) - 1
    assert failures[0] == {
        "event": "stream.batch_failed",
        "shard_id": "S",
        "error": "RuntimeError",
        "count": 3,
        "attempt": 1,
        "log_level": "warning",
    }
    logged = json.dumps(logs, default=str)
    assert SECRET not in logged  # not the exception text
    assert "uS-0" not in logged  # nor keys or images
    assert metrics.count("userstore_stream_batch_failures", {"error": "RuntimeError"}) == len(
        failures
    )
    assert metrics.count("userstore_stream_records", {"event": "INSERT"}) == 3


async def test_stop_interrupts_a_failing_batch_and_releases_without_checkpoint(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    fill(stream, "S", 2)
    handler = Recorder()
    handler.fail_next = 1_000_000
    slow_retries = replace(CONFIG, retry_base_s=60, retry_max_s=60)
    run = Running(make(stream, leases, handler, config=slow_retries))
    try:
        await eventually(lambda: len(handler.batches) == 1)
    finally:
        await run.stop()  # bounded by Running.stop's 5 s, though the backoff is 30-60 s
    assert leases.items["S"].owner is None
    assert leases.items["S"].checkpoint is None


async def test_lag_is_measured_and_zero_once_caught_up(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    fill(stream, "S", 2)
    stream.clock.advance(7)
    handler = Recorder()
    metrics = Metrics()
    consumer = make(stream, leases, handler, metrics=metrics)
    async with running(consumer):
        await eventually(lambda: len(handler.sequences) == 2)
        await eventually(lambda: consumer.lag_s == 0.0)
        gauge = metrics.registry.get_sample_value("userstore_stream_lag_seconds")
        assert gauge is not None
        assert gauge >= 0.0
    assert leases.items["S"].last_record_at is not None


def owners(leases: MemoryLeases) -> Counter[str | None]:
    return Counter(lease.owner for lease in leases.items.values())


# Checkpoints written at most every minute; renewals (which carry them) far apart too.
COALESCING = replace(CONFIG, checkpoint_every_s=60, renew_every_s=20)


async def test_checkpoints_are_coalesced_and_written_on_stop(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    records = fill(stream, "S", 9)
    handler = Recorder()
    async with running(make(stream, leases, handler, config=COALESCING)):
        await eventually(lambda: len(handler.sequences) == 9)
        await asyncio.sleep(0.05)
        # The first batch was due (nothing written yet); the next two wait for a later write.
        assert leases.items["S"].checkpoint == records[2]
    assert leases.items["S"].checkpoint == records[-1]  # written on stop, before the release
    assert leases.items["S"].owner is None


async def test_a_lease_renewal_carries_the_checkpoint_not_yet_written(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    records = fill(stream, "S", 9)
    handler = Recorder()
    renewing = replace(COALESCING, renew_every_s=0.05)
    async with running(make(stream, leases, handler, config=renewing)):
        await eventually(
            lambda: "S" in leases.items and leases.items["S"].checkpoint == records[-1]
        )
        assert leases.items["S"].owner == "w1"  # still running: a renewal wrote it
        assert leases.items["S"].last_record_at is not None


async def test_a_crash_redelivers_what_was_handled_since_the_last_written_checkpoint(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    records = fill(stream, "S", 9)
    crashing = Recorder()
    run = Running(make(stream, leases, crashing, config=COALESCING))
    try:
        await eventually(lambda: len(crashing.sequences) == 9)
    finally:
        await run.kill()
    assert leases.items["S"].checkpoint == records[2]

    restarted = Recorder()
    async with running(make(stream, leases, restarted, config=COALESCING)):
        await eventually(lambda: len(restarted.sequences) == 6)
        await asyncio.sleep(0.05)
    assert restarted.sequences == records[3:]  # at least once: handled again, none skipped


async def test_a_failed_batch_is_read_again_from_the_last_handled_not_the_last_written(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    records = fill(stream, "S", 9)
    handler = Recorder(hang_at=2)
    async with running(make(stream, leases, handler, config=COALESCING)):
        await eventually(lambda: len(handler.batches) == 2)
        handler.fail_next = 1  # the third batch fails once
        handler.resume.set()
        await eventually(lambda: len(handler.sequences) == 12)
        await asyncio.sleep(0.05)
    # Batches 1 and 2 once each; batch 3 twice (failed, then handled); nothing from before.
    assert handler.sequences == records[:6] + records[6:] + records[6:]
    assert leases.items["S"].checkpoint == records[-1]


async def test_a_reader_that_is_caught_up_reads_once_per_interval_under_load(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    """A shard written to all the time is read every poll_idle_s, not once per record."""
    stream.add_shard("S")
    handler = Recorder()
    config = replace(CONFIG, poll_idle_s=0.25, max_records=1000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running(make(stream, leases, handler, config=config)):
        written = []
        for i in range(100):  # about one second of a record every 10 ms
            written.append(stream.put("S", f"u-{i}"))
            await asyncio.sleep(0.01)
        await eventually(lambda: len(handler.sequences) == 100)
    elapsed = loop.time() - started
    assert handler.sequences == written
    # Every read is followed by the wait: each returns what accumulated meanwhile. Reading again
    # at once after a batch (and waiting only after an empty read) would take about twice this.
    assert stream.calls["read"] <= elapsed / config.poll_idle_s + 2, (stream.calls, elapsed)


async def test_a_full_page_is_followed_at_once(stream: FakeStream, leases: MemoryLeases) -> None:
    """Behind (pages come back full): no wait between reads, whatever poll_idle_s says."""
    stream.add_shard("S")
    records = fill(stream, "S", 30)
    handler = Recorder()
    config = replace(CONFIG, poll_idle_s=60)  # a wait would outlast the test's 5 s
    async with running(make(stream, leases, handler, config=config)):
        await eventually(lambda: len(handler.sequences) == 30)
    assert handler.sequences == records
    assert [len(batch) for batch in handler.batches] == [3] * 10


async def test_two_replicas_split_four_shards_and_one_takes_over_when_the_other_dies(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    shards = ["s1", "s2", "s3", "s4"]
    for shard_id in shards:
        stream.add_shard(shard_id)
    a, b = Recorder(), Recorder()
    replica_a = make(stream, leases, a, "a")
    replica_b = make(stream, leases, b, "b")
    run_a, run_b = Running(replica_a), Running(replica_b)
    try:
        await eventually(
            lambda: len(replica_a.owned_shards) == 2 and len(replica_b.owned_shards) == 2
        )
        assert replica_a.owned_shards.isdisjoint(replica_b.owned_shards)
        written = {shard_id: fill(stream, shard_id, 5) for shard_id in shards}
        await eventually(lambda: len(a.sequences) + len(b.sequences) == 20)
        for shard_id in shards:  # each shard read by exactly one replica, each record once
            by_a, by_b = a.by_shard().get(shard_id, []), b.by_shard().get(shard_id, [])
            assert (by_a or by_b) == written[shard_id]
            assert not (by_a and by_b)
        assert set(a.by_shard()) == replica_a.owned_shards
        await eventually(lambda: all(leases.items[s].checkpoint == written[s][-1] for s in shards))

        await run_a.kill()  # dies holding its leases
        assert owners(leases)["a"] == 2
        stream.clock.advance(CONFIG.lease_duration_s + 1)
        more = {shard_id: fill(stream, shard_id, 2, prefix="v") for shard_id in shards}
        await eventually(lambda: len(replica_b.owned_shards) == 4)
        await eventually(lambda: len(b.sequences) == 10 + 8)
        for shard_id in shards:
            assert b.by_shard()[shard_id][-2:] == more[shard_id]
        handled = a.sequences + b.sequences
        assert len(handled) == len(set(handled)) == 28
    finally:
        await run_b.stop()
        await run_a.kill()
    assert owners(leases) == {None: 4}


async def test_a_replica_that_stops_hands_its_shards_over_at_once(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    for shard_id in ["s1", "s2", "s3", "s4"]:
        stream.add_shard(shard_id)
    a, b = Recorder(), Recorder()
    replica_a, replica_b = make(stream, leases, a, "a"), make(stream, leases, b, "b")
    run_b = Running(replica_b)
    try:
        async with running(replica_a) as run_a:
            await eventually(
                lambda: len(replica_a.owned_shards) == 2 and len(replica_b.owned_shards) == 2
            )
            await run_a.stop()
        # No clock change: the leases were released, not left to expire.
        await eventually(lambda: len(replica_b.owned_shards) == 4)
        for shard_id in ["s1", "s2", "s3", "s4"]:
            stream.put(shard_id, f"late-{shard_id}")
        await eventually(lambda: len(b.sequences) == 4)
        assert a.sequences == []
    finally:
        await run_b.stop()


async def test_a_paused_replica_that_lost_its_lease_stops_without_checkpointing(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    records = fill(stream, "S", 5)
    paused = Recorder(hang_at=1)  # the handler hangs on the first batch: a long pause, say
    replica = make(stream, leases, paused, "a")
    async with running(replica):
        await eventually(lambda: len(paused.batches) == 1)
        stream.clock.advance(CONFIG.lease_duration_s + 1)
        rival = await leases.acquire("S", "b", round(stream.clock() * 1000))
        assert rival is not None
        paused.resume.set()  # the pause ends: the batch returns, its checkpoint must fail
        await eventually(lambda: not replica.owned_shards)
        stream.put("S", "after-the-pause")
        await asyncio.sleep(0.1)
    assert paused.sequences == records[:3]  # nothing more from that shard
    assert leases.items["S"].checkpoint is None
    assert leases.items["S"].owner == "b"


async def test_unexpected_errors_end_run_instead_of_vanishing(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    fill(stream, "S", 1)
    stream.read_failures.append(RuntimeError("a bug in the reader"))
    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(make(stream, leases, Recorder()).run(asyncio.Event()), 5)
    assert raised.group_contains(RuntimeError)


async def test_an_unknown_stream_ends_run(leases: MemoryLeases) -> None:
    stream = FakeStream()
    stream.exists = False
    consumer = StreamConsumer(
        stream,
        leases,
        stream_arn=STREAM_ARN,
        worker_id="w1",
        handler=Recorder(),
        config=CONFIG,
    )
    with pytest.raises(ExceptionGroup) as raised:
        await asyncio.wait_for(consumer.run(asyncio.Event()), 5)
    assert raised.group_contains(StreamNotFound)


async def test_a_shard_that_splits_while_read_is_finished_before_its_children(
    stream: FakeStream, leases: MemoryLeases
) -> None:
    stream.add_shard("S")
    before = fill(stream, "S", 4)
    handler = Recorder()
    async with running(make(stream, leases, handler)):
        await eventually(lambda: len(handler.sequences) == 4)
        last = fill(stream, "S", 2, prefix="last")
        stream.split("S", "L", "R")
        left, right = fill(stream, "L", 3), fill(stream, "R", 2)
        await eventually(lambda: len(handler.sequences) == 11)
        await eventually(lambda: leases.items["S"].checkpoint == SHARD_END)
    assert handler.by_shard() == {"S": before + last, "L": left, "R": right}
    order = handler.sequences
    assert max(order.index(s) for s in last) < min(order.index(s) for s in left + right)


async def test_a_shard_gone_while_read_ends_its_reader_and_its_child_goes_on(
    stream: FakeStream, leases: MemoryLeases, logs: list[MutableMapping[str, Any]]
) -> None:
    stream.add_shard("P")
    parent = fill(stream, "P", 5)  # pages of 3: the second page is never read
    handler = Recorder(hang_at=1)
    async with running(make(stream, leases, handler)):
        await eventually(lambda: len(handler.batches) == 1)
        stream.split("P", "C")
        child = fill(stream, "C", 2)
        stream.remove("P")  # past retention before its reader came back
        handler.resume.set()
        await eventually(lambda: len(handler.sequences) == 5)
    assert handler.by_shard() == {"P": parent[:3], "C": child}
    assert stream.raised[Unreadable.GONE] == 1
    gone = [entry for entry in logs if entry["event"] == "stream.shard_gone"]
    assert gone == [{"event": "stream.shard_gone", "shard_id": "P", "log_level": "warning"}]
    stopped = [entry for entry in logs if entry["event"] == "stream.shard_stopped"]
    assert {"shard_id": "P", "outcome": "gone"} in [
        {key: entry[key] for key in ("shard_id", "outcome")} for entry in stopped
    ]
    assert leases.items["P"].owner is None  # released
    assert leases.items["P"].checkpoint == parent[2]


async def test_a_late_replica_asks_for_its_share_and_gets_it_at_a_batch_boundary(
    stream: FakeStream, leases: MemoryLeases, logs: list[MutableMapping[str, Any]]
) -> None:
    shards = ["s1", "s2", "s3", "s4"]
    for shard_id in shards:
        stream.add_shard(shard_id)
        fill(stream, shard_id, 2)
    a, b = Recorder(), Recorder()
    replica_a, replica_b = make(stream, leases, a, "a"), make(stream, leases, b, "b")
    async with running(replica_a):
        await eventually(lambda: len(a.sequences) == 8)
        assert len(replica_a.owned_shards) == 4
        async with running(replica_b):
            # No clock change: no lease expires; b asks, a hands over one shard at a time.
            await eventually(
                lambda: len(replica_a.owned_shards) == 2 and len(replica_b.owned_shards) == 2
            )
            written = {shard_id: fill(stream, shard_id, 2, prefix="v") for shard_id in shards}
            await eventually(lambda: len(a.sequences) + len(b.sequences) == 16)
            await asyncio.sleep(0.05)
    handled = a.sequences + b.sequences
    assert len(handled) == len(set(handled)) == 16  # nothing handed over was read twice
    assert set(b.by_shard()) == {s for s in shards if b.by_shard().get(s) == written[s]}
    assert len(b.by_shard()) == 2
    events = Counter(entry["event"] for entry in logs)
    assert events["stream.handoff_requested"] >= 2
    assert events["stream.handoff"] >= 2
    handed = [
        e for e in logs if e["event"] == "stream.shard_stopped" and e["outcome"] == "handed_off"
    ]
    assert {entry["shard_id"] for entry in handed} == set(b.by_shard())


@pytest.mark.parametrize(
    "bad",
    [
        {"renew_every_s": 30},
        {"renew_every_s": 0},
        {"max_records": 0},
        {"max_records": 1001},
        {"poll_idle_s": 0},
        {"retry_max_s": 0.001},
        {"checkpoint_every_s": -1},
    ],
)
def test_config_rejects_settings_that_cannot_work(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        replace(CONFIG, **bad)


def test_record_repr_leaves_out_keys_and_images(stream: FakeStream) -> None:
    stream.add_shard("S")
    stream.put("S", SECRET, event="MODIFY")
    raw = stream.by_id["S"].records[0]
    record = StreamRecord.from_raw(raw, "S")
    assert (
        record.new_image
        == record.old_image
        == {"user_id": {"S": SECRET}, "seq": raw["dynamodb"]["NewImage"]["seq"]}
    )
    assert SECRET not in repr(record)
