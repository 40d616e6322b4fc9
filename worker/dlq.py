"""The dead-letter queue, for operators: what is in it, and sending it back after a fix.

`inspect` reads the `userstore.*` message attributes the worker sets when it dead-letters a
message (worker.dead_letters) and never the body, which may hold personal data. It receives with
a short visibility timeout and releases every message at once (visibility 0); it never deletes.
On a FIFO queue a receive only returns the oldest message of each group not already held, so a
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

from .dead_letters import (
    ERROR_ATTRIBUTE,
    EVENT_ID_ATTRIBUTE,
    EVENT_TYPE_ATTRIBUTE,
    REASON_ATTRIBUTE,
    RECEIVE_COUNT_ATTRIBUTE,
    SOURCE_ID_ATTRIBUTE,
)
from .logs import get_logger
from .ports import MAX_BATCH, EntryFailed, OutgoingMessage, Queue, QueueMessage
from .tracing import TRACE_ATTRIBUTE

log = get_logger("userstore.dlq")

_PEEK_VISIBILITY_S = 30
_MOVE_VISIBILITY_S = 60
_NO_REASON = "no reason recorded (moved by the queue's redrive policy)"
# What the worker recorded about the failure: not carried back to the main queue.
_FAILURE_ATTRIBUTES = frozenset(
    {REASON_ATTRIBUTE, ERROR_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE, SOURCE_ID_ATTRIBUTE}
)


@dataclass(frozen=True)
class ListedDeadLetter:
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
    def of(cls, message: QueueMessage, now_s: float) -> ListedDeadLetter:
        sent_ms = now_s * 1000 if message.sent_at_ms is None else message.sent_at_ms
        count = message.text(RECEIVE_COUNT_ATTRIBUTE)
        return cls(
            message_id=message.id,
            event_id=message.text(EVENT_ID_ATTRIBUTE),
            event_type=message.text(EVENT_TYPE_ATTRIBUTE),
            error=message.text(ERROR_ATTRIBUTE),
            reason=message.text(REASON_ATTRIBUTE) or _NO_REASON,
            age_s=max(0.0, now_s - sent_ms / 1000),
            receive_count=None if count is None else int(count),
            trace_id=message.text(TRACE_ATTRIBUTE),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Listing:
    dead_letters: list[ListedDeadLetter]
    approximate_total: int


@dataclass
class RedriveReport:
    moved: list[ListedDeadLetter] = field(default_factory=list)
    skipped: int = 0  # not matching the error filter: left in the dead-letter queue
    failed: int = 0  # the send failed: left in the dead-letter queue
    dry_run: bool = False


class DeadLetterAdmin:
    """The operator's commands on the dead-letter queue: list it, send it back."""

    def __init__(
        self, dead_letters: Queue, queue: Queue, *, move_visibility_s: int = _MOVE_VISIBILITY_S
    ) -> None:
        """`move_visibility_s`: how long a message being moved stays hidden in the DLQ; if the
        move is interrupted after the send, it reappears then and a re-run sends it again."""
        self._dlq = dead_letters
        self._queue = queue
        self._move_visibility_s = move_visibility_s

    async def inspect(self, max_messages: int, now_s: float) -> Listing:
        held: dict[str, QueueMessage] = {}
        try:
            while len(held) < max_messages:
                batch = await self._receive(min(MAX_BATCH, max_messages - len(held)))
                fresh = [m for m in batch if m.id not in held]
                for message in batch:
                    held[message.id] = message  # the latest receipt handle releases it
                if not fresh:
                    break
        finally:
            await self._release(list(held.values()))
        listed = [ListedDeadLetter.of(message, now_s) for message in held.values()]
        return Listing(sorted(listed, key=lambda d: -d.age_s), await self._dlq.depth())

    async def redrive(
        self, max_messages: int, *, errors: Collection[str] = (), dry_run: bool = False
    ) -> RedriveReport:
        """Move up to `max_messages` (those whose error class is in `errors`, if given)."""
        report = RedriveReport(dry_run=dry_run)
        seen: set[str] = set()
        held: list[QueueMessage] = []  # dry run, or not matching: released at the end
        try:
            while len(report.moved) < max_messages:
                batch = await self._receive(
                    min(MAX_BATCH, max_messages - len(report.moved)), self._move_visibility_s
                )
                fresh = [m for m in batch if m.id not in seen]
                if not fresh:
                    held += batch
                    break
                seen.update(m.id for m in fresh)
                chosen = [m for m in fresh if _matches(m, errors)]
                report.skipped += len(fresh) - len(chosen)
                held += [m for m in batch if m not in chosen]
                if dry_run:
                    report.moved += [ListedDeadLetter.of(m, 0) for m in chosen]
                    held += chosen
                    continue
                sent, unsent = await self._send(chosen)
                report.failed += len(unsent)
                held += unsent
                await self._delete(sent)
                report.moved += [ListedDeadLetter.of(m, 0) for m in sent]
        finally:
            await self._release(held)
        return report

    async def _receive(
        self, count: int, visibility_s: int = _PEEK_VISIBILITY_S
    ) -> list[QueueMessage]:
        # A long poll asks every server: a short one may miss some.
        return await self._dlq.receive(count, wait_s=1, visibility_timeout_s=visibility_s)

    async def _send(
        self, messages: list[QueueMessage]
    ) -> tuple[list[QueueMessage], list[QueueMessage]]:
        if not messages:
            return [], []
        outgoing = []
        for message in messages:
            kept = {k: v for k, v in message.attributes.items() if k not in _FAILURE_ATTRIBUTES}
            if self._queue.fifo:
                group = message.group or "userstore-redriven"
                outgoing.append(OutgoingMessage(message.body, kept, group, f"redrive-{message.id}"))
            else:
                outgoing.append(OutgoingMessage(message.body, kept))
        failures = await self._queue.send_batch(outgoing)
        for failure in failures:
            log.warning("dlq.redrive_send_failed", code=failure.code)
        failed = {failure.index for failure in failures}
        sent = [m for i, m in enumerate(messages) if i not in failed]
        return sent, [m for i, m in enumerate(messages) if i in failed]

    async def _delete(self, messages: list[QueueMessage]) -> None:
        for chunk in _chunks(messages):
            failures = await self._dlq.delete([m.receipt for m in chunk])
            _log_failures("DeleteMessageBatch", failures)

    async def _release(self, messages: list[QueueMessage]) -> None:
        for chunk in _chunks(messages):
            failures = await self._dlq.change_visibility([m.receipt for m in chunk], 0)
            _log_failures("ChangeMessageVisibilityBatch", failures)


def _chunks(messages: list[QueueMessage]) -> list[list[QueueMessage]]:
    return [messages[i : i + MAX_BATCH] for i in range(0, len(messages), MAX_BATCH)]


def _log_failures(operation: str, failures: list[EntryFailed]) -> None:
    for failure in failures:
        log.warning("dlq.batch_entry_failed", operation=operation, code=failure.code)


def _matches(message: QueueMessage, errors: Collection[str]) -> bool:
    return not errors or message.text(ERROR_ATTRIBUTE) in errors
