"""Redrive interrupted between send and delete: a re-run finishes the job without duplicates
reaching the main queue (the deduplication id comes from the dead letter's message id)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from tests.harness.settings import make_settings, provision_settings
from userstore.worker.adapters.queue import SqsQueue
from userstore.worker.app import aws_clients, queue_url
from userstore.worker.dlq import DeadLetterAdmin
from userstore.worker.ports import QueueMessage


class Interrupted(Exception):
    pass


class CrashesBeforeDelete(DeadLetterAdmin):
    """The process dies after the messages were sent and before they were deleted."""

    async def _delete(self, messages: list[QueueMessage]) -> None:
        raise Interrupted


async def depth(sqs: Any, url: str) -> int:
    attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def test_an_interrupted_redrive_is_finished_by_a_rerun_without_duplicates(
    moto_endpoint: str,
) -> None:
    settings = await provision_settings(make_settings(moto_endpoint))
    async with aws_clients(settings) as clients:
        sqs = clients.sqs
        main = await queue_url(sqs, settings.queue, settings)
        dlq = await queue_url(sqs, settings.dlq, settings)
        bodies = [json.dumps({"event_id": f"e-{n}"}) for n in range(3)]
        for n, body in enumerate(bodies):
            await sqs.send_message(
                QueueUrl=dlq,
                MessageBody=body,
                MessageGroupId=f"user-{n}",
                MessageDeduplicationId=uuid.uuid4().hex,
                MessageAttributes={
                    "userstore.error": {"DataType": "String", "StringValue": "KeyUnavailable"},
                    "userstore.reason": {"DataType": "String", "StringValue": "KMS was down"},
                    "userstore.trace_id": {"DataType": "String", "StringValue": f"t-{n}"},
                },
            )

        queues = SqsQueue(sqs, dlq, max_attempts=3), SqsQueue(sqs, main, max_attempts=3)
        crashing = CrashesBeforeDelete(*queues, move_visibility_s=1)
        with pytest.raises(Interrupted):
            await crashing.redrive(10)
        assert await depth(sqs, main) == 3
        assert await depth(sqs, dlq) == 3  # hidden for move_visibility_s, not lost

        await asyncio.sleep(1.5)
        report = await DeadLetterAdmin(*queues).redrive(10)
        assert len(report.moved) == 3 and report.failed == 0
        assert await depth(sqs, dlq) == 0
        assert await depth(sqs, main) == 3  # the second sends were deduplicated

        received = (
            await sqs.receive_message(
                QueueUrl=main,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["MessageGroupId"],
            )
        )["Messages"]
        assert sorted(m["Body"] for m in received) == sorted(bodies)
        for message in received:
            attributes = message["MessageAttributes"]
            assert set(attributes) == {"userstore.trace_id"}  # the failure record stays behind
            n = int(message["Attributes"]["MessageGroupId"].removeprefix("user-"))
            assert attributes["userstore.trace_id"]["StringValue"] == f"t-{n}"
