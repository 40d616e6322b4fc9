"""The queue adapter: the only code that calls SQS (the consumer, the Lambda batch's dead
letters, the `dlq` commands).

Every call goes through `aws.call`, so a failure arrives as an error of the tree
(AwsUnavailable); a batch call answers the entries SQS refused, by index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..aws import call
from ..ports import MAX_BATCH, EntryFailed, OutgoingMessage, QueueMessage


async def queue_url(sqs: Any, name_or_url: str, max_attempts: int) -> str:
    """A queue's URL from its name (GetQueueUrl), or the URL itself."""
    if name_or_url.startswith(("http://", "https://")):
        return name_or_url
    response = await call(
        "GetQueueUrl", sqs.get_queue_url, max_attempts=max_attempts, QueueName=name_or_url
    )
    return str(response["QueueUrl"])


async def open_queue(sqs: Any, name_or_url: str, max_attempts: int) -> SqsQueue:
    return SqsQueue(sqs, await queue_url(sqs, name_or_url, max_attempts), max_attempts)


def _message(raw: dict[str, Any]) -> QueueMessage:
    system = raw.get("Attributes", {})
    group = system.get("MessageGroupId")
    sent = system.get("SentTimestamp")
    return QueueMessage(
        id=str(raw["MessageId"]),
        body=str(raw.get("Body", "")),
        receipt=str(raw["ReceiptHandle"]),
        receive_count=int(system.get("ApproximateReceiveCount", "1")),
        group=None if group is None else str(group),
        attributes=raw.get("MessageAttributes", {}),
        trace_header=system.get("AWSTraceHeader"),
        sent_at_ms=None if sent is None else int(sent),
    )


def _entry(message: OutgoingMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"MessageBody": message.body}
    if message.attributes:
        entry["MessageAttributes"] = dict(message.attributes)
    if message.group is not None:
        entry["MessageGroupId"] = message.group
    if message.deduplication_id is not None:
        entry["MessageDeduplicationId"] = message.deduplication_id
    return entry


def _failures(response: dict[str, Any]) -> list[EntryFailed]:
    return [EntryFailed(int(f["Id"]), str(f.get("Code", ""))) for f in response.get("Failed", [])]


def _check_batch(entries: Sequence[object]) -> None:
    if len(entries) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} entries per batch call, not {len(entries)}")


# A message counts wherever it is: waiting, received and not yet settled, or sent with a delay.
_DEPTH = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


class SqsQueue:
    """One queue, by URL (the Queue port over aiobotocore's SQS client)."""

    def __init__(self, sqs: Any, url: str, max_attempts: int) -> None:
        self._sqs = sqs
        self.url = url
        self._attempts = max_attempts

    @property
    def fifo(self) -> bool:
        return self.url.endswith(".fifo")

    async def receive(
        self, max_messages: int, *, wait_s: int, visibility_timeout_s: int
    ) -> list[QueueMessage]:
        response = await call(
            "ReceiveMessage",
            self._sqs.receive_message,
            max_attempts=self._attempts,
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=visibility_timeout_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [_message(raw) for raw in response.get("Messages", [])]

    async def delete(self, receipts: Sequence[str]) -> list[EntryFailed]:
        _check_batch(receipts)
        response = await call(
            "DeleteMessageBatch",
            self._sqs.delete_message_batch,
            max_attempts=self._attempts,
            QueueUrl=self.url,
            Entries=[{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts)],
        )
        return _failures(response)

    async def change_visibility(self, receipts: Sequence[str], timeout_s: int) -> list[EntryFailed]:
        _check_batch(receipts)
        entries = [
            {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": timeout_s}
            for i, r in enumerate(receipts)
        ]
        response = await call(
            "ChangeMessageVisibilityBatch",
            self._sqs.change_message_visibility_batch,
            max_attempts=self._attempts,
            QueueUrl=self.url,
            Entries=entries,
        )
        return _failures(response)

    async def send(self, message: OutgoingMessage) -> None:
        await call(
            "SendMessage",
            self._sqs.send_message,
            max_attempts=self._attempts,
            QueueUrl=self.url,
            **_entry(message),
        )

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailed]:
        _check_batch(messages)
        response = await call(
            "SendMessageBatch",
            self._sqs.send_message_batch,
            max_attempts=self._attempts,
            QueueUrl=self.url,
            Entries=[{"Id": str(i), **_entry(m)} for i, m in enumerate(messages)],
        )
        return _failures(response)

    async def depth(self) -> int:
        response = await call(
            "GetQueueAttributes",
            self._sqs.get_queue_attributes,
            max_attempts=self._attempts,
            QueueUrl=self.url,
            AttributeNames=list(_DEPTH),
        )
        attributes = response.get("Attributes", {})
        return sum(int(attributes.get(name, 0)) for name in _DEPTH)
