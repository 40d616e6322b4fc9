"""One message's steps that the consumer (worker.sqs) and the Lambda batch (worker.lambdas)
share: read it, handle it, report a retry. Each step answers what failed, if anything, for the
settlement policy (worker.settlement) to decide on; the loops carry the decision out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from .errors import DeadLetter, RecordTampered, RetryLater
from .handlers import Hints, Outcome
from .logs import frames, get_logger
from .metrics import Metrics
from .profile import Event
from .settlement import Decision

log = get_logger("userstore.handling")


class Handler(Protocol):
    """What the Lambda batch needs of the domain (worker.handlers.UserEventHandler)."""

    async def handle(self, event: Event, hints: Hints | None = None) -> Outcome: ...


class EventHandler(Handler, Protocol):
    """What the consumer needs of it: also a prefetch of a batch's records."""

    async def prefetch(self, user_ids: Iterable[str]) -> Hints: ...


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


async def handle(
    handler: Handler, event: Event, hints: Hints | None, metrics: Metrics, message_id: str
) -> Exception | None:
    """Apply the event; count and log how it went. None when it went through."""
    kind = str(event.type)
    bound = log.bind(message_id=message_id, event_id=event.event_id, type=kind)
    started = time.perf_counter()
    try:
        outcome = await handler.handle(event, hints)
    except DeadLetter as exc:
        metrics.events.labels(kind, "dead_lettered").inc()
        if isinstance(exc, RecordTampered):
            metrics.verification_failures.inc()
            bound.error("security.record_verification_failed", error=exc.reason)
        return exc
    except Exception as exc:
        metrics.events.labels(kind, "failed").inc()
        if not isinstance(exc, RetryLater):  # a bug: never let it kill the worker, nor log its text
            bound.error("message.unexpected_error", error=type(exc).__name__, frames=frames(exc))
        return exc
    finally:
        metrics.handling_seconds.labels(kind).observe(time.perf_counter() - started)
    metrics.events.labels(kind, str(outcome)).inc()
    bound.info("message.handled", outcome=str(outcome))
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
