"""The worker's consumer (worker/sqs.py) and the Lambda batch (worker/lambdas.py) dead-letter the
same bad messages with the same `userstore.*` attributes; `userstore.event_type` is there
whenever the body named a valid type, even when another field was invalid."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.fakes.handler import ScriptedHandler, event_body
from tests.fakes.memory_queue import FakeQueue
from userstore.worker.dead_letters import EVENT_TYPE_ATTRIBUTE, DeadLetterSender
from userstore.worker.lambdas import SqsBatch, message_from_lambda
from userstore.worker.message_reader import MessageReader
from userstore.worker.metrics import Metrics
from userstore.worker.settlement import Limits
from userstore.worker.sqs import ConsumerConfig, SqsConsumer

EVENT = json.loads(event_body("e-0"))
BAD_FIELD = EVENT | {"event_id": "e-bad-field", "occurred_at": "yesterday"}
SEALED = {
    "type": "user.updated",
    "event_id": "e-sealed",
    "user_id": "u",
    "occurred_at": "2026-11-28T10:00:00Z",
    "sealed": "not base64!",
}
# body -> the event type the dead letter must name (None: the body named no valid type).
BAD_MESSAGES: dict[str, str | None] = {
    "not json": None,
    json.dumps(EVENT | {"event_id": "e-bad-type", "type": "user.exploded"}): None,
    json.dumps({"event_id": "e-no-type"}): None,
    json.dumps(BAD_FIELD): "user.created",
    json.dumps(SEALED): "user.updated",
    json.dumps(SEALED | {"event_id": "e-sealed-odd-type", "type": ["user.updated"]}): None,
    json.dumps(
        {
            "Type": "Notification",
            "MessageId": "n-1",
            "TopicArn": "arn:aws:sns:eu-west-2:1:t",
            "Message": json.dumps(BAD_FIELD | {"event_id": "e-sns"}),
        }
    ): "user.created",
    json.dumps(
        {
            "version": "0",
            "id": "b-1",
            "source": "com.example.accounts",
            "detail-type": "user.created",
            "detail": BAD_FIELD | {"event_id": "e-eventbridge"},
        }
    ): "user.created",
    event_body("e-refused-by-handler"): "user.created",
}
DEAD = {"e-refused-by-handler"}


async def _consumer_dead_letters() -> list[dict[str, Any]]:
    queue, dlq = FakeQueue(), FakeQueue()
    for body in BAD_MESSAGES:
        queue.put(body)
    config = ConsumerConfig(
        queue_url="https://sqs.invalid/q",
        dlq_url="https://sqs.invalid/dlq",
        max_in_flight=4,
        wait_time_s=1,
        visibility_timeout_s=30,
        max_receive_count=5,
        drain_timeout_s=1,
        retry_delay_max_s=0,
    )
    metrics = Metrics()
    handler = ScriptedHandler(dead=DEAD)
    consumer = SqsConsumer(queue, DeadLetterSender(dlq, metrics), config, handler, metrics)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    async with asyncio.timeout(10):
        while queue.stored:  # noqa: ASYNC110 - polls the fake, which signals nothing
            await asyncio.sleep(0.01)
    stop.set()
    await running
    return [m.attributes for m in dlq.sent]


async def _lambda_dead_letters() -> list[dict[str, Any]]:
    dlq = FakeQueue()
    batch = SqsBatch(
        MessageReader(opener=None, executor=None),
        ScriptedHandler(dead=DEAD),
        DeadLetterSender(dlq, Metrics()),
        Limits(5),
        Metrics(),
        max_in_flight=4,
    )
    records = [
        # The same ids and receive count the in-memory queue gives them.
        message_from_lambda(
            {
                "messageId": f"m-{n}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "eventSource": "aws:sqs",
            }
        )
        for n, body in enumerate(BAD_MESSAGES)
    ]
    assert await batch.run(records) == []
    return [m.attributes for m in dlq.sent]


def _by_source(dead_letters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["userstore.source_message_id"]["StringValue"]: a for a in dead_letters}


async def test_both_paths_write_the_same_dead_letter_attributes() -> None:
    consumer = _by_source(await _consumer_dead_letters())
    lambdas = _by_source(await _lambda_dead_letters())
    assert len(consumer) == len(BAD_MESSAGES)
    assert consumer == lambdas
    for n, event_type in enumerate(BAD_MESSAGES.values()):
        written = consumer[f"m-{n}"].get(EVENT_TYPE_ATTRIBUTE)
        assert (written and written["StringValue"]) == event_type, n
