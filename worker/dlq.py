"""The dead-letter queue, for operators: what is in it, and sending it back after a fix.

`inspect` reads the `userstore.*` message attributes the worker sets when it dead-letters a
message (worker.sqs) and never the body, which may hold personal data. It receives with a short
visibility timeout and releases every message at once (visibility 0); it never deletes. On a
FIFO queue a receive only returns the oldest message of each group not already held, so a
group with several dead letters shows its first one; `approximate_total` says how many there are.

`redrive` moves messages back to the main queue: send first, then delete. Interrupted between
the two, a message is in both queues; sent again, it is handled twice, which is harmless because
events are idempotent (and the deduplication id, derived from the dead letter's message id,
makes SQS drop a second send within its 5-minute window).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

from .aws import call
from .logs import get_logger
from .sqs import (
    ERROR_ATTRIBUTE,
    EVENT_ID_ATTRIBUTE,
    EVENT_TYPE_ATTRIBUTE,
    REASON_ATTRIBUTE,
    RECEIVE_COUNT_ATTRIBUTE,
)
from .tracing import TRACE_ATTRIBUTE

log = get_logger("userstore.dlq")

_MAX_BATCH = 10
_PEEK_VISIBILITY_S = 30
_MOVE_VISIBILITY_S = 60
_NO_REASON = "no reason recorded (moved by the queue's redrive policy)"
# What the worker recorded about the failure: not carried back to the main queue.
_FAILURE_ATTRIBUTES = frozenset(
    {REASON_ATTRIBUTE, ERROR_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE, "userstore.source_message_id"}
)


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as an operator sees it: ids, classes and counts, never the body."""

    message_id: str
    event_id: str | None
    event_type: str | None
    error: str | None
    reason: str
    age_s: float
    receive_count: int | None
    trace_id: str | None

    @classmethod
    def from_raw(cls, raw: dict[str, Any], now_s: float) -> DeadLetter:
        attributes = raw.get("MessageAttributes", {})

        def text(name: str) -> str | None:
            value = attributes.get(name, {}).get("StringValue")
            return None if value is None else str(value)

        sent_ms = int(raw.get("Attributes", {}).get("SentTimestamp", now_s * 1000))
        count = text(RECEIVE_COUNT_ATTRIBUTE)
        return cls(
            message_id=str(raw["MessageId"]),
            event_id=text(EVENT_ID_ATTRIBUTE),
            event_type=text(EVENT_TYPE_ATTRIBUTE),
            error=text(ERROR_ATTRIBUTE),
            reason=text(REASON_ATTRIBUTE) or _NO_REASON,
            age_s=max(0.0, now_s - sent_ms / 1000),
            receive_count=None if count is None else int(count),
            trace_id=text(TRACE_ATTRIBUTE),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Listing:
    dead_letters: list[DeadLetter]
    approximate_total: int


@dataclass
class RedriveReport:
    moved: list[DeadLetter] = field(default_factory=list)
    skipped: int = 0  # not matching the error filter: left in the dead-letter queue
    failed: int = 0  # the send failed: left in the dead-letter queue
    dry_run: bool = False


class DeadLetterQueue:
    def __init__(
        self,
        sqs: Any,
        dlq_url: str,
        queue_url: str,
        *,
        max_attempts: int,
        move_visibility_s: int = _MOVE_VISIBILITY_S,
    ) -> None:
        """`move_visibility_s`: how long a message being moved stays hidden in the DLQ; if the
        move is interrupted after the send, it reappears then and a re-run sends it again."""
        self._sqs = sqs
        self._dlq_url = dlq_url
        self._queue_url = queue_url
        self._attempts = max_attempts
        self._move_visibility_s = move_visibility_s

    async def inspect(self, max_messages: int, now_s: float) -> Listing:
        held: dict[str, dict[str, Any]] = {}
        try:
            while len(held) < max_messages:
                batch = await self._receive(min(_MAX_BATCH, max_messages - len(held)))
                fresh = [m for m in batch if m["MessageId"] not in held]
                for raw in batch:
                    held[raw["MessageId"]] = raw  # the latest receipt handle releases it
                if not fresh:
                    break
        finally:
            await self._release(list(held.values()))
        listed = [DeadLetter.from_raw(raw, now_s) for raw in held.values()]
        return Listing(sorted(listed, key=lambda d: -d.age_s), await self._approximate_total())

    async def redrive(
        self, max_messages: int, *, errors: Collection[str] = (), dry_run: bool = False
    ) -> RedriveReport:
        """Move up to `max_messages` (those whose error class is in `errors`, if given)."""
        report = RedriveReport(dry_run=dry_run)
        seen: set[str] = set()
        held: list[dict[str, Any]] = []  # dry run, or not matching: released at the end
        try:
            while len(report.moved) < max_messages:
                batch = await self._receive(
                    min(_MAX_BATCH, max_messages - len(report.moved)), self._move_visibility_s
                )
                fresh = [m for m in batch if m["MessageId"] not in seen]
                if not fresh:
                    held += batch
                    break
                seen.update(m["MessageId"] for m in fresh)
                chosen = [m for m in fresh if _matches(m, errors)]
                report.skipped += len(fresh) - len(chosen)
                held += [m for m in batch if m not in chosen]
                if dry_run:
                    report.moved += [DeadLetter.from_raw(m, 0) for m in chosen]
                    held += chosen
                    continue
                sent, unsent = await self._send(chosen)
                report.failed += len(unsent)
                held += unsent
                await self._delete(sent)
                report.moved += [DeadLetter.from_raw(m, 0) for m in sent]
        finally:
            await self._release(held)
        return report

    async def _receive(self, count: int, visibility_s: int = _PEEK_VISIBILITY_S) -> list[Any]:
        response = await call(
            "ReceiveMessage",
            self._sqs.receive_message,
            max_attempts=self._attempts,
            QueueUrl=self._dlq_url,
            MaxNumberOfMessages=count,
            VisibilityTimeout=visibility_s,
            WaitTimeSeconds=1,  # a long poll asks every server: a short one may miss some
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["SentTimestamp", "MessageGroupId"],
        )
        return list(response.get("Messages", []))

    async def _send(self, messages: list[Any]) -> tuple[list[Any], list[Any]]:
        if not messages:
            return [], []
        fifo = self._queue_url.endswith(".fifo")
        entries = []
        for i, raw in enumerate(messages):
            entry: dict[str, Any] = {
                "Id": str(i),
                "MessageBody": raw["Body"],
                "MessageAttributes": {
                    name: value
                    for name, value in raw.get("MessageAttributes", {}).items()
                    if name not in _FAILURE_ATTRIBUTES
                },
            }
            if fifo:
                group = raw.get("Attributes", {}).get("MessageGroupId")
                entry["MessageGroupId"] = group or "userstore-redriven"
                entry["MessageDeduplicationId"] = f"redrive-{raw['MessageId']}"
            entries.append(entry)
        response = await call(
            "SendMessageBatch",
            self._sqs.send_message_batch,
            max_attempts=self._attempts,
            QueueUrl=self._queue_url,
            Entries=entries,
        )
        failed = {int(f["Id"]) for f in response.get("Failed", [])}
        for failure in response.get("Failed", []):
            log.warning("dlq.redrive_send_failed", code=failure.get("Code"))
        sent = [m for i, m in enumerate(messages) if i not in failed]
        return sent, [m for i, m in enumerate(messages) if i in failed]

    async def _delete(self, messages: list[Any]) -> None:
        if messages:
            await self._batch("DeleteMessageBatch", self._sqs.delete_message_batch, messages, {})

    async def _release(self, messages: list[Any]) -> None:
        if messages:
            await self._batch(
                "ChangeMessageVisibilityBatch",
                self._sqs.change_message_visibility_batch,
                messages,
                {"VisibilityTimeout": 0},
            )

    async def _batch(
        self, operation: str, fn: Any, messages: list[Any], extra: dict[str, Any]
    ) -> None:
        for start in range(0, len(messages), _MAX_BATCH):
            chunk = messages[start : start + _MAX_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], **extra}
                for i, m in enumerate(chunk)
            ]
            response = await call(
                operation,
                fn,
                max_attempts=self._attempts,
                QueueUrl=self._dlq_url,
                Entries=entries,
            )
            for failure in response.get("Failed", []):
                log.warning("dlq.batch_entry_failed", operation=operation, code=failure.get("Code"))

    async def _approximate_total(self) -> int:
        response = await call(
            "GetQueueAttributes",
            self._sqs.get_queue_attributes,
            max_attempts=self._attempts,
            QueueUrl=self._dlq_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response.get("Attributes", {})
        return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
            attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
        )


def _matches(raw: dict[str, Any], errors: Collection[str]) -> bool:
    if not errors:
        return True
    error = raw.get("MessageAttributes", {}).get(ERROR_ATTRIBUTE, {}).get("StringValue")
    return error in errors
