"""Running the SQS consumer's loop on in-memory queues (tests/fakes/memory_queue.py) until a
condition on the fakes holds, then stopping it as the process would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.fakes.memory_queue import FakeQueue
from userstore.worker.dead_letters import DeadLetterSender
from userstore.worker.handling import EventHandler
from userstore.worker.metrics import Metrics
from userstore.worker.sqs import ConsumerConfig, SqsConsumer

MAX_RECEIVES = 5


async def consume(
    queue: FakeQueue,
    dlq: FakeQueue,
    handler: EventHandler,
    until: Callable[[], bool],
    *,
    max_in_flight: int = 8,
) -> Metrics:
    config = ConsumerConfig(
        queue_url="https://sqs.invalid/q" + (".fifo" if queue.fifo else ""),
        dlq_url="https://sqs.invalid/dlq" + (".fifo" if dlq.fifo else ""),
        max_in_flight=max_in_flight,
        wait_time_s=1,
        visibility_timeout_s=30,
        max_receive_count=MAX_RECEIVES,
        drain_timeout_s=1,
        retry_delay_max_s=0,  # retried messages come back at once
    )
    metrics = Metrics()
    consumer = SqsConsumer(queue, DeadLetterSender(dlq, metrics), config, handler, metrics)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    async with asyncio.timeout(10):
        while not until():  # noqa: ASYNC110 - polls the fakes, which signal nothing
            await asyncio.sleep(0.01)
    stop.set()
    await running
    return metrics
