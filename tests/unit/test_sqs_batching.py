"""Receives and deletes fill a batch of ten when the permits or receipts arrive soon after."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tests.fakes.memory_queue import FakeQueue
from userstore.worker import batched_deletes
from userstore.worker import sqs as sqs_module
from userstore.worker.batched_deletes import BatchedDeletes
from userstore.worker.metrics import Metrics
from userstore.worker.ports import EntryFailed
from userstore.worker.sqs import ConsumerConfig, SqsConsumer


class RecordingSqs(FakeQueue):
    def __init__(self) -> None:
        super().__init__()
        self.delete_batches: list[int] = []

    async def delete(self, receipts: Sequence[str]) -> list[EntryFailed]:
        self.delete_batches.append(len(receipts))
        return []


def consumer(max_in_flight: int) -> SqsConsumer:
    config = ConsumerConfig(
        queue_url="https://sqs.invalid/q.fifo",
        dlq_url="https://sqs.invalid/dlq.fifo",
        max_in_flight=max_in_flight,
        wait_time_s=1,
        visibility_timeout_s=30,
        max_receive_count=5,
        drain_timeout_s=1,
    )
    return SqsConsumer(FakeQueue(), None, config, handler=None, metrics=Metrics())  # type: ignore[arg-type]


async def test_the_receiver_waits_briefly_for_permits_that_work_in_flight_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqs_module, "_RECEIVE_FILL_S", 5.0)  # a slow machine can't flake it
    subject = consumer(max_in_flight=32)
    for _ in range(30):  # 30 messages in flight: 2 permits free
        await subject._capacity.acquire()
    subject._in_flight["m"] = None  # type: ignore[assignment]

    async def handled_soon() -> None:
        await asyncio.sleep(0.01)
        for _ in range(8):
            subject._capacity.release()

    releasing = asyncio.create_task(handled_soon())
    assert await subject._acquire_permits() == 10
    await releasing


async def test_the_receiver_does_not_wait_when_nothing_is_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqs_module, "_RECEIVE_FILL_S", 5.0)
    subject = consumer(max_in_flight=32)
    for _ in range(30):
        await subject._capacity.acquire()
    started = asyncio.get_running_loop().time()
    assert await subject._acquire_permits() == 2
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_the_receiver_never_waits_for_more_than_the_in_flight_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqs_module, "_RECEIVE_FILL_S", 5.0)
    subject = consumer(max_in_flight=4)
    subject._in_flight["m"] = None  # type: ignore[assignment]
    started = asyncio.get_running_loop().time()
    assert await subject._acquire_permits() == 4
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_receipts_arriving_soon_after_go_in_one_delete_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batched_deletes, "_DELETE_FILL_S", 5.0)
    sqs = RecordingSqs()
    deleter = BatchedDeletes(sqs)
    stop = asyncio.Event()
    running = asyncio.create_task(deleter.run(stop))
    for n in range(3):
        deleter.add(f"m{n}", f"r{n}")
    await asyncio.sleep(0.02)
    for n in range(3, 10):
        deleter.add(f"m{n}", f"r{n}")
    await asyncio.sleep(0.05)
    assert sqs.delete_batches == [10]  # full: sent at once, not at the end of the fill time
    stop.set()
    await running
    assert sqs.delete_batches == [10]


async def test_a_partial_batch_is_deleted_within_the_fill_time_and_on_stop() -> None:
    sqs = RecordingSqs()
    deleter = BatchedDeletes(sqs)
    stop = asyncio.Event()
    running = asyncio.create_task(deleter.run(stop))
    deleter.add("m0", "r0")
    await asyncio.sleep(1.0)  # the fill time is 0.1 s
    assert sqs.delete_batches == [1]
    deleter.add("m1", "r1")
    stop.set()
    await running
    assert sqs.delete_batches == [1, 1]
