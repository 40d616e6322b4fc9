"""The floor: only the AWS calls no consumer can avoid, as its own process.

`python -m bench.floor`: receive (up to ten at a time), one PutItem of an already-encrypted item
per event (a real sealed record of the same shape, `BENCH_TEMPLATE`, with the event's user id),
then one DeleteMessageBatch per receive. No validation, no encryption, no conditional writes,
no visibility handling, no dead-lettering. An event id seen before is not written again (the
least a consumer must remember to honour "a duplicate costs no write"). In-flight messages are
bounded by `BENCH_IN_FLIGHT`, receivers as the worker has them (one for a FIFO queue).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bench.items import decode_item
from bench.probe import Probe
from userstore.worker.aws import USER_AGENT


class Floor:
    def __init__(self, sqs: Any, ddb: Any, queue_url: str, table: str, in_flight: int) -> None:
        self.sqs, self.ddb = sqs, ddb
        self.queue_url, self.table = queue_url, table
        self.capacity = asyncio.Semaphore(in_flight)
        self.template = decode_item(json.loads(os.environ["BENCH_TEMPLATE"]))
        self.seen: set[str] = set()
        self.settled = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def receive_loop(self) -> None:
        while True:
            await self.capacity.acquire()
            permits = 1
            while permits < 10 and not self.capacity.locked():
                await self.capacity.acquire()
                permits += 1
            response = await self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=permits, WaitTimeSeconds=1
            )
            messages = response.get("Messages", [])
            for _ in range(permits - len(messages)):
                self.capacity.release()
            if messages:
                task = asyncio.create_task(self.batch(messages))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def batch(self, messages: list[dict[str, Any]]) -> None:
        await asyncio.gather(*(self.write(m) for m in messages))
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        await self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        self.settled += len(messages)
        for _ in messages:
            self.capacity.release()

    async def write(self, message: dict[str, Any]) -> None:
        body = json.loads(message["Body"])
        if body["event_id"] in self.seen:
            return
        self.seen.add(body["event_id"])
        item = {**self.template, "user_id": {"S": body["user_id"]}}
        await self.ddb.put_item(TableName=self.table, Item=item)


async def main() -> None:
    in_flight = int(os.environ["BENCH_IN_FLIGHT"])
    queue_url = os.environ["BENCH_QUEUE_URL"]
    # The worker's fixed User-Agent too: the floor must not pay for what the worker skips.
    config = AioConfig(
        max_pool_connections=max(10, in_flight),
        retries={"max_attempts": 3},
        user_agent=USER_AGENT,
    )
    session = get_session()
    kwargs = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"], "config": config}
    async with (
        session.create_client("sqs", **kwargs) as sqs,
        session.create_client("dynamodb", **kwargs) as ddb,
    ):
        floor = Floor(sqs, ddb, queue_url, os.environ["BENCH_TABLE"], in_flight)
        probe = Probe(lambda: floor.settled)
        probe.start()
        receivers = 1 if queue_url.endswith(".fifo") else max(1, min(8, -(-in_flight // 10)))
        await asyncio.gather(probe.sample_lag(), *(floor.receive_loop() for _ in range(receivers)))


if __name__ == "__main__":
    asyncio.run(main())
