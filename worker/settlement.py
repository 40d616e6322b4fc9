"""The settlement policy: what becomes of a received message, given how handling it went.

Pure: no I/O, no clock, no randomness of its own (the retry jitter is passed in). The SQS
consumer (worker.sqs) and the Lambda batch (worker.lambdas) carry a Decision out in their terms:

    action        consumer                               Lambda batch
    ACKNOWLEDGE   deleted (in batches)                   success: the event source deletes it
    RETRY         visible again after `delay_s`          reported in batchItemFailures
    DEAD_LETTER   body to the DLQ with the reason, then deleted / reported success
    HOLD          released untouched (visibility 0)      reported failed, untouched
    LEAVE         left to its visibility timeout         reported failed

RETRY, HOLD and LEAVE hold the rest of a FIFO group: SQS hands the group back in order, the
failed message first. A failing message is dead-lettered on its last allowed receive, so the
dead-letter queue says why; SQS's own redrive stays the backstop (LEAVE relies on it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from .errors import DeadLetter, InvalidMessage, PayloadKeyUnavailable, RetryLater

UNEXPECTED = "unexpected error"


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    HOLD = "hold"
    LEAVE = "leave"


class Group(StrEnum):
    """Where the message stands in its FIFO group, within the batch being settled."""

    NONE = "none"  # a standard queue: every message stands alone
    CLEAR = "clear"  # FIFO: no earlier message of its group failed
    FAILED = "failed"  # FIFO: an earlier message of its group failed; this one was not handled


@dataclass(frozen=True)
class Limits:
    max_receive_count: int  # the queue's redrive maxReceiveCount
    retry_delay_max_s: int = 60


@dataclass(frozen=True)
class Decision:
    action: Action
    error: str | None = None  # the error's class name: metric label, userstore.error
    reason: str | None = None  # safe to log: never a value
    delay_s: int = 0  # RETRY: how long the message stays invisible
    unexpected: bool = False  # not a DeadLetter or RetryLater: a bug, logged with its frames
    # Known from the error when the message did not parse (the dead letter still says which).
    event_id: str | None = None
    event_type: str | None = None
    in_fifo_group: bool = False

    @property
    def holds_group(self) -> bool:
        """Whether the rest of the message's FIFO group must wait behind it."""
        held = self.action in (Action.RETRY, Action.HOLD, Action.LEAVE)
        return held and self.in_fifo_group


def settle(
    failure: BaseException | None,
    receive_count: int,
    limits: Limits,
    group: Group = Group.NONE,
    *,
    jitter: float = 1.0,
) -> Decision:
    """Decide for one message.

    `failure`: None when reading and handling it succeeded, else what was raised (ignored when
    `group` is FAILED: the message was held, not handled). `jitter` in [0, 1] picks the retry
    delay in [backoff / 2, backoff], the backoff doubling with each receive.
    """
    decision = _decide(failure, receive_count, limits, group, jitter)
    return replace(decision, in_fifo_group=group is not Group.NONE)


def _decide(
    failure: BaseException | None, receive_count: int, limits: Limits, group: Group, jitter: float
) -> Decision:
    if group is Group.FAILED:
        return Decision(Action.HOLD)
    if failure is None:
        return Decision(Action.ACKNOWLEDGE)
    error = type(failure).__name__
    event_id = event_type = None
    if isinstance(failure, InvalidMessage | PayloadKeyUnavailable):
        event_id, event_type = failure.event_id, failure.event_type
    if isinstance(failure, DeadLetter):
        return Decision(Action.DEAD_LETTER, error, failure.reason, 0, False, event_id, event_type)
    unexpected = not isinstance(failure, RetryLater)
    # A bug's text may hold a value: it is named by class only.
    reason = failure.reason if isinstance(failure, RetryLater) else UNEXPECTED
    if receive_count >= limits.max_receive_count:
        reason = f"gave up after {receive_count} attempts: {reason}"
        return Decision(Action.DEAD_LETTER, error, reason, 0, unexpected, event_id, event_type)
    backoff = min(limits.retry_delay_max_s, 2**receive_count)
    floor = backoff // 2
    delay = min(backoff, floor + int(jitter * (backoff - floor + 1)))
    return Decision(Action.RETRY, error, reason, delay, unexpected, event_id, event_type)


def unsent(decision: Decision) -> Decision:
    """A dead letter the dead-letter queue did not take: leave the message to SQS (its redrive
    moves it eventually), and hold its group."""
    return replace(decision, action=Action.LEAVE)
