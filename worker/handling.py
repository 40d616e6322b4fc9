"""The steps that the consumer (worker.sqs) and the Lambda batch (worker.lambdas) share: read a
message, handle a sequence of them burst by burst, report a retry. Each step answers what failed,
if anything, for the settlement policy (worker.settlement) to decide on; the loops carry the
decision out.

A burst is a run of consecutive events of one user in a sequence (a FIFO group's messages in a
receive, or one user's in a standard queue's): the handler applies it with one open, one seal
and one conditional write, and every message of it is settled on that write's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .errors import DeadLetter, RecordTampered, RetryLater
from .handlers import Hints, Result
from .logs import frames, get_logger
from .metrics import Metrics
from .profile import Event
from .settlement import Decision, Group
from .tracing import message_context

log = get_logger("userstore.handling")

M = TypeVar("M")  # a received message, as the loop that settles it holds it


class Handler(Protocol):
    """What the Lambda batch needs of the domain (worker.handlers.UserEventHandler)."""

    async def handle_burst(
        self, events: Sequence[Event], hints: Hints | None = None
    ) -> list[Result]: ...


class EventHandler(Handler, Protocol):
    """What the consumer needs of it: also a prefetch of a batch's records."""

    async def prefetch(self, user_ids: Iterable[str]) -> Hints: ...


@dataclass(frozen=True)
class Delivery:
    """A parsed event and the message it came in, as the log lines name them."""

    message_id: str
    trace_id: str
    event: Event


class Reader(Protocol):
    """What the loops need of the intake (worker.message_reader.MessageReader)."""

    async def read(self, body: str | bytes) -> Event: ...


async def read(reader: Reader, body: str) -> Event | Exception:
    """The event, or what refused it: InvalidMessage, a RetryLater, or (a bug) anything else."""
    try:
        return await reader.read(body)
    except (DeadLetter, RetryLater) as exc:
        return exc
    except Exception as exc:  # a bug in intake: never log its text
        log.error("message.unexpected_error", error=type(exc).__name__, frames=frames(exc))
        return exc


def bursts(deliveries: Sequence[tuple[M, Delivery]]) -> list[list[tuple[M, Delivery]]]:
    """Runs of consecutive events of one user, in order: each is handled as one burst."""
    runs: list[list[tuple[M, Delivery]]] = []
    for item in deliveries:
        if runs and runs[-1][-1][1].event.user_id == item[1].event.user_id:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


async def handle_in_order(
    handler: Handler,
    deliveries: Sequence[tuple[M, Delivery]],
    hints: Hints | None,
    metrics: Metrics,
    group: Group,
    settle_one: Callable[[M, Delivery, Exception | None, Group], Awaitable[Decision]],
) -> None:
    """Handle a sequence of messages (a FIFO group's, or one user's) burst by burst, settling
    every message of a burst on its outcome, in order.

    `settle_one(message, delivery, failure, group)` decides and carries out: once a message
    holds its FIFO group (a retry, or a dead letter that could not be sent), the rest of the
    sequence is settled with `Group.FAILED`, unhandled.
    """
    for run in bursts(deliveries):
        if group is Group.FAILED:
            failures: list[Exception | None] = [None] * len(run)
        else:
            failures = await handle_burst(handler, [d for _, d in run], hints, metrics)
        for (message, delivery), failure in zip(run, failures, strict=True):
            decision = await settle_one(message, delivery, failure, group)
            if decision.holds_group:
                group = Group.FAILED


async def handle_burst(
    handler: Handler, deliveries: Sequence[Delivery], hints: Hints | None, metrics: Metrics
) -> list[Exception | None]:
    """Apply one user's events as one burst; count and log each event's outcome. Per event,
    None when it went through, else what it failed with."""
    started = time.perf_counter()
    try:
        results = await handler.handle_burst([d.event for d in deliveries], hints)
    except Exception as exc:  # a bug: every event of the burst meets it
        results = [exc] * len(deliveries)
    elapsed_s = time.perf_counter() - started
    metrics.burst_events.observe(len(deliveries))
    failures: list[Exception | None] = []
    for delivery, result in zip(deliveries, results, strict=True):
        event = delivery.event
        with message_context(delivery.message_id, event.event_id, delivery.trace_id):
            failures.append(_report(event, result, metrics, delivery.message_id))
        metrics.handling_seconds.labels(str(event.type)).observe(elapsed_s)
    return failures


def _report(event: Event, result: Result, metrics: Metrics, message_id: str) -> Exception | None:
    """Count and log how handling one event went. None when it went through."""
    kind = str(event.type)
    bound = log.bind(message_id=message_id, event_id=event.event_id, type=kind)
    if isinstance(result, DeadLetter):
        metrics.events.labels(kind, "dead_lettered").inc()
        if isinstance(result, RecordTampered):
            metrics.verification_failures.inc()
            bound.error("security.record_verification_failed", error=result.reason)
        return result
    if isinstance(result, Exception):
        metrics.events.labels(kind, "failed").inc()
        if not isinstance(
            result, RetryLater
        ):  # a bug: never let it kill the worker, nor log its text
            bound.error(
                "message.unexpected_error", error=type(result).__name__, frames=frames(result)
            )
        return result
    metrics.events.labels(kind, str(result)).inc()
    bound.info("message.handled", outcome=str(result))
    return None


def report_retry(
    decision: Decision,
    message_id: str,
    event_id: str | None,
    metrics: Metrics,
    *,
    with_delay: bool,
) -> None:
    metrics.retries.labels(decision.error or "").inc()
    delay = {"delay_s": decision.delay_s} if with_delay else {}
    log.warning(
        "message.retry_later",
        message_id=message_id,
        event_id=event_id,
        error=decision.error,
        reason=decision.reason,
        **delay,
    )
