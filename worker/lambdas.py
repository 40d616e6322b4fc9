"""AWS Lambda entry points, for running userstore on AWS's managed pollers.

- ``userstore.worker.lambdas.sqs_handler``: SQS event source (standard or FIFO queue), with
  ``FunctionResponseTypes=["ReportBatchItemFailures"]``. Each record goes through the worker's
  own intake (unwrap SNS/EventBridge, unseal, parse) and handler.
- ``userstore.worker.lambdas.streams_handler``: DynamoDB Streams event source on the users
  table, also with ReportBatchItemFailures. Records still sealed under a retired key are
  re-encrypted by the same Resealer the replicas' stream reader uses.
- ``userstore.worker.lambdas.sweep_handler``: an EventBridge Scheduler target. One time-boxed
  slice of the re-encryption sweep (worker.scheduled): it stops between pages 3 s before the
  function's timeout, and the next invocation resumes from the checkpoints; an overlapping
  invocation answers ``busy`` at once. Its report is the answer and one ``sweep.report`` line.

How each SQS record is settled (the worker's policy, worker.settlement, in Lambda's terms):
- applied, a no-op, or a duplicate -> success (the event source mapping deletes it);
- DeadLetter (InvalidMessage included) -> the handler sends the body untouched to the
  dead-letter queue with the worker's reason attributes, then reports success. The queue's own
  redrive would move it only after maxReceiveCount failed receives, and without a reason;
- RetryLater or an unexpected error -> reported in ``batchItemFailures``: SQS hands it out again
  after the visibility timeout. On its last allowed receive (USERSTORE_MAX_RECEIVE_COUNT, the
  redrive policy's maxReceiveCount) it is dead-lettered with "gave up after N attempts" instead;
- a dead-letter send that fails -> reported failed, so the message is not lost;
- FIFO: after a failure in a message group, the group's later records in the batch are reported
  failed untouched, so SQS redelivers the group in order;
- out of time (3 s before the function's timeout): what is unfinished is cancelled and reported
  failed, rather than letting the timeout fail the whole batch.

Lifetime: clients, keys and the crypto thread pool are built once per container (on the first
invocation) and kept in a module-level runtime with its own event loop, reused by every
invocation. ``asyncio.run`` per invocation would close the loop that aiobotocore's connection
pools are bound to, so every invocation would pay for new clients, a KMS DescribeKey, the control
records and the blind-index key unwrap. A container handles one invocation at a time, so the
loop is never shared.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from userstore.events import Event

from . import handling
from .adapters.queue import SqsQueue
from .app import Components, components, queue_url
from .control import is_control
from .dead_letters import DeadLetterSender
from .endpoints import check_endpoints
from .errors import InvalidSweepInput, RetryLater, UserstoreError
from .follow import FollowContext, follow_authority
from .handling import Handler, Reader
from .lambda_events import message_from_lambda as message_from_lambda
from .lambda_events import stream_record_from_lambda as stream_record_from_lambda
from .logs import configure, frames, get_logger
from .metrics import Metrics
from .ports import QueueMessage, UsersTable
from .reseal import Resealer
from .rotation_duties import SetAside, record_user_id, reencrypt_if_stale
from .scheduled import run_scheduled_sweep
from .settings import Settings
from .settlement import Action, Decision, Group, Limits, settle, unsent
from .streams import EventName
from .tracing import message_context

log = get_logger("userstore.lambda")

BatchResponse = dict[str, list[dict[str, str]]]
# Answer this long before Lambda's own timeout: enough for a last SendMessage and the reply.
_DEADLINE_MARGIN_S = 3.0


def _time_budget_s(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return max(0.0, float(remaining()) / 1000 - _DEADLINE_MARGIN_S)


# --- SQS ----------------------------------------------------------------------


class SqsBatch:
    """Settles one Lambda SQS batch; returns the records to report in batchItemFailures.

    The settlement policy (worker.settlement) decides; here a retry, a hold or a dead letter
    that could not be sent is a failure to report, and SQS's visibility timeout is the delay.
    """

    def __init__(
        self,
        reader: Reader,
        handler: Handler,
        dead_letters: DeadLetterSender,
        limits: Limits,
        metrics: Metrics,
        *,
        max_in_flight: int,
    ) -> None:
        self._reader = reader
        self._handler = handler
        self._dead_letters = dead_letters
        self._limits = limits
        self._metrics = metrics
        self._capacity = asyncio.Semaphore(max_in_flight)

    async def run(
        self, records: Sequence[QueueMessage], time_budget_s: float | None = None
    ) -> list[str]:
        """Message ids to report failed, in batch order.

        With `time_budget_s`, work still unfinished when it runs out is cancelled and reported
        failed, so the function answers before Lambda's timeout (which would fail the batch).
        """
        # FIFO: one sequence per message group, in batch order. Standard: each record alone
        # (the conditional write keeps concurrent events of one user consistent).
        sequences: dict[str, list[QueueMessage]] = {}
        for record in records:
            key = f"group:{record.group}" if record.group is not None else record.id
            sequences.setdefault(key, []).append(record)
        done: set[str] = set()
        try:
            async with asyncio.timeout(time_budget_s), asyncio.TaskGroup() as tg:
                for sequence in sequences.values():
                    tg.create_task(self._run_sequence(sequence, done))
        except TimeoutError:
            log.warning("batch.out_of_time", unsettled=len(records) - len(done))
        return [record.id for record in records if record.id not in done]

    async def _run_sequence(self, sequence: list[QueueMessage], done: set[str]) -> None:
        # The rest of a FIFO group waits behind a failure: held, reported failed untouched.
        state = Group.NONE if sequence[0].group is None else Group.CLEAR
        for record in sequence:
            if state is Group.FAILED:
                decision = settle(None, record.receive_count, self._limits, state)
            else:
                async with self._capacity:
                    decision = await self._settle(record, state)
            if decision.action in (Action.ACKNOWLEDGE, Action.DEAD_LETTER):
                done.add(record.id)
            if decision.holds_group:
                state = Group.FAILED

    async def _settle(self, record: QueueMessage, group: Group) -> Decision:
        with message_context(record.id, None, record.trace_id(None)):
            read = await handling.read(self._reader, record.body)
            if isinstance(read, Exception):
                return await self._carry_out(
                    record, None, settle(read, record.receive_count, self._limits, group)
                )
        with message_context(record.id, read.event_id, record.trace_id(read)):
            failure = await handling.handle(self._handler, read, None, self._metrics, record.id)
            decision = settle(failure, record.receive_count, self._limits, group)
            return await self._carry_out(record, read, decision)

    async def _carry_out(
        self, record: QueueMessage, event: Event | None, decision: Decision
    ) -> Decision:
        event_id = event.event_id if event is not None else decision.event_id
        if decision.action is Action.RETRY:
            handling.report_retry(decision, record.id, event_id, self._metrics, with_delay=False)
        elif decision.action is Action.DEAD_LETTER:
            sent = await self._dead_letters.send(
                record,
                decision.reason or "",
                decision.error or "",
                event_id,
                trace_id=record.trace_id(event),
                event_type=str(event.type) if event is not None else decision.event_type,
            )
            if not sent:
                decision = unsent(decision)  # reported failed: not lost
        return decision


def sqs_batch(parts: Components, dlq_url: str, metrics: Metrics) -> SqsBatch:
    settings = parts.settings
    dead_letters = SqsQueue(parts.clients.sqs, dlq_url, settings.aws_max_attempts)
    return SqsBatch(
        parts.reader,
        parts.handler,
        DeadLetterSender(dead_letters, metrics),
        Limits(settings.max_receive_count),
        metrics,
        max_in_flight=settings.max_in_flight,
    )


# --- DynamoDB Streams -----------------------------------------------------------


class StreamBatchContext(FollowContext, Protocol):
    """A stream batch follows the control records and re-encrypts through the users table."""

    @property
    def store(self) -> UsersTable: ...


async def handle_stream_batch(
    parts: StreamBatchContext,
    metrics: Metrics,
    raw_records: Sequence[Mapping[str, Any]],
    time_budget_s: float | None = None,
    set_aside: SetAside | None = None,
) -> BatchResponse:
    """Re-encrypt stale records in order; on a retryable failure report it and stop there.

    With `set_aside` (kept by the container across invocations), a record that keeps failing
    is given up on after a bounded number of tries instead of blocking its shard.

    Lambda retries a stream batch from the lowest sequence number reported, so everything after
    the first failure is left for that retry (the re-encryption is idempotent).
    """
    if not raw_records:
        return {"batchItemFailures": []}
    records = [stream_record_from_lambda(raw) for raw in raw_records]
    resealer = Resealer(
        parts.store, parts.cipher, parts.index, max_conflicts=parts.settings.max_conflict_retries
    )
    target = None
    current = records[0]
    try:
        async with asyncio.timeout(time_budget_s):
            for current in records:
                if target is None or is_control(record_user_id(current)):
                    # Read fresh per batch, and again after a control record (a rotation).
                    target = await follow_authority(parts)
                if current.event_name is not EventName.REMOVE:
                    work = functools.partial(reencrypt_if_stale, resealer, target, current, metrics)
                    if set_aside is None:
                        await work()
                    else:
                        await set_aside.attempt(current, work)
    except Exception as exc:  # TimeoutError included: retry from the record in hand
        level = log.warning if isinstance(exc, RetryLater | TimeoutError) else log.error
        level(
            "stream.record_failed",
            sequence_number=current.sequence_number,
            error=type(exc).__name__,
            frames=None if isinstance(exc, UserstoreError | TimeoutError) else frames(exc),
        )
        return {"batchItemFailures": [{"itemIdentifier": current.sequence_number}]}
    return {"batchItemFailures": []}


# --- the container's runtime -----------------------------------------------------


@dataclass
class _Runtime:
    loop: asyncio.AbstractEventLoop
    stack: AsyncExitStack
    parts: Components
    dlq_url: str
    metrics: Metrics
    set_aside: SetAside
    followed_at: float = float("-inf")

    async def follow_if_due(self) -> None:
        """Adopt a rotated key as a replica does, at most every `control_poll_s`.

        A warm container could otherwise seal under a retired key for hours; the stream handler
        would catch those records, but there is no reason to make it.
        """
        now = time.monotonic()
        if now - self.followed_at < self.parts.settings.control_poll_s:
            return
        try:
            await follow_authority(self.parts)
        except UserstoreError as exc:
            log.warning("control.follow_failed", error=type(exc).__name__, reason=exc.reason)
            return
        self.followed_at = now


_runtime: _Runtime | None = None


def _get_runtime() -> _Runtime:
    global _runtime
    if _runtime is None:
        settings = Settings()
        configure(settings.log_level)
        check_endpoints(
            settings.aws_endpoint_url, os.environ, allow_insecure=settings.allow_insecure_endpoint
        )
        loop = asyncio.new_event_loop()
        stack = AsyncExitStack()
        try:
            parts = loop.run_until_complete(stack.enter_async_context(components(settings)))
            dlq = loop.run_until_complete(queue_url(parts.clients.sqs, settings.dlq, settings))
        except BaseException:
            loop.run_until_complete(stack.aclose())
            loop.close()
            raise
        metrics = Metrics()
        set_aside = SetAside(settings.stream_max_record_tries, metrics)
        _runtime = _Runtime(loop, stack, parts, dlq, metrics, set_aside)
        atexit.register(close_runtime)  # a script's exit closes the clients (Lambda never exits)
    return _runtime


def close_runtime() -> None:
    """Release the container's clients and loop: for tests and scripts (run at exit too); Lambda
    simply freezes the container."""
    global _runtime
    atexit.unregister(close_runtime)
    if _runtime is not None:
        runtime, _runtime = _runtime, None
        runtime.loop.run_until_complete(runtime.stack.aclose())
        runtime.loop.close()


def sqs_handler(event: Mapping[str, Any], context: Any) -> BatchResponse:
    """Handler ``userstore.worker.lambdas.sqs_handler`` for an SQS event source mapping."""
    runtime = _get_runtime()
    records = [message_from_lambda(raw) for raw in event.get("Records", [])]
    batch = sqs_batch(runtime.parts, runtime.dlq_url, runtime.metrics)
    runtime.loop.run_until_complete(runtime.follow_if_due())
    failed = runtime.loop.run_until_complete(batch.run(records, _time_budget_s(context)))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def streams_handler(event: Mapping[str, Any], context: Any) -> BatchResponse:
    """Handler ``userstore.worker.lambdas.streams_handler``: a DynamoDB Streams event source."""
    runtime = _get_runtime()
    return runtime.loop.run_until_complete(
        handle_stream_batch(
            runtime.parts,
            runtime.metrics,
            event.get("Records", []),
            _time_budget_s(context),
            runtime.set_aside,
        )
    )


class SweepInput(BaseModel):
    """The schedule's Input: every field optional. Keep `segments` fixed across runs: the
    checkpoints belong to one segment count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segments: int = Field(default=4, ge=1, le=64)
    rate: float = Field(default=100.0, gt=0)
    verify: bool = False
    force: bool = False


def sweep_input(event: Any) -> SweepInput:
    try:
        return SweepInput.model_validate(event or {})
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "(input)" for e in exc.errors())
        raise InvalidSweepInput(f"invalid sweep input: {fields}") from None


def sweep_handler(event: Any, context: Any) -> dict[str, Any]:
    """Handler ``userstore.worker.lambdas.sweep_handler`` for an EventBridge Scheduler schedule."""
    options = sweep_input(event)
    runtime = _get_runtime()
    report = runtime.loop.run_until_complete(
        run_scheduled_sweep(
            runtime.parts,
            max_duration_s=_time_budget_s(context),
            segments=options.segments,
            rate_per_s=options.rate,
            verify=options.verify,
            force=options.force,
            metrics=runtime.metrics,
        )
    )
    return report.as_dict()


__all__ = [
    "InvalidSweepInput",
    "SqsBatch",
    "SweepInput",
    "close_runtime",
    "handle_stream_batch",
    "message_from_lambda",
    "sqs_handler",
    "stream_record_from_lambda",
    "streams_handler",
    "sweep_handler",
]
