"""Queue messages for tests: event bodies, sending them as any publisher would, waiting for a
queue to drain, and receiving (and deleting) all that is left."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

from tests.harness.traffic import NOW
from userstore.worker.queue_depth import Emptiness


def body(event_id: str, kind: str, user: str, seconds: int, data: Any = None) -> str:
    message: dict[str, Any] = {
        "event_id": event_id,
        "type": kind,
        "user_id": user,
        "occurred_at": (NOW + timedelta(seconds=seconds)).isoformat(),
    }
    if data is not None:
        message["data"] = data
    return json.dumps(message)


async def send_all(sqs: Any, url: str, bodies: list[tuple[str, str]]) -> None:
    """(group, body) pairs, sent the way any publisher would: plain SendMessageBatch."""
    fifo = url.endswith(".fifo")
    for start in range(0, len(bodies), 10):
        entries = []
        for i, (group, text) in enumerate(bodies[start : start + 10]):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": text}
            if fifo:
                entry |= {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
            entries.append(entry)
        response = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed")


async def drain_queue(sqs: Any, url: str, timeout_s: float = 60) -> None:
    """Until every reading for a second says no message waiting and none in flight."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    empty = Emptiness()
    while loop.time() < deadline:
        response = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        if empty.observe(sum(int(response["Attributes"][n]) for n in names), loop.time()):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("queue did not drain")


async def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        response = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        )
        messages = response.get("Messages", [])
        if not messages:
            return found
        found.extend(messages)
        await sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
