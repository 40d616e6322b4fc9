"""The SQS consumer: receive -> parse -> handle -> settle, with bounded concurrency.

Every received message is settled exactly one way:
- applied (or a no-op)        -> deleted, in batches of up to 10;
- DeadLetter error             -> body sent untouched to the DLQ with the reason, then deleted;
- RetryLater or unexpected     -> made visible again after a jittered backoff; on its last
                                  allowed receive it is dead-lettered with the reason instead;
- FIFO: after a failure, the rest of that group's batch -> released untouched (visibility 0), so
  SQS hands the group back in order, failed message first.

While a message is being worked on its visibility is extended. On stop, receiving stops, work in
flight gets `drain_timeout_s` to finish, and pending deletes are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from userstore.events import InvalidEvent

from .aws import call
from .errors import DeadLetter, RecordTampered, RetryLater, UserstoreError
from .handlers import Hints, Outcome
from .intake import ERROR_ATTRIBUTE as ERROR_ATTRIBUTE
from .intake import EVENT_ID_ATTRIBUTE as EVENT_ID_ATTRIBUTE
from .intake import EVENT_TYPE_ATTRIBUTE as EVENT_TYPE_ATTRIBUTE
from .intake import REASON_ATTRIBUTE as REASON_ATTRIBUTE
from .intake import RECEIVE_COUNT_ATTRIBUTE as RECEIVE_COUNT_ATTRIBUTE
from .intake import SOURCE_ID_ATTRIBUTE as SOURCE_ID_ATTRIBUTE
from .intake import DeadLetterQueue, MessageReader, PayloadKeyUnavailable
from .logs import frames, get_logger
from .metrics import Metrics
from .profile import Event
from .tracing import message_context, trace_id

log = get_logger("userstore.sqs")

_MAX_BATCH = 10
# How long a partial batch may wait to fill: receipts to delete (ten per DeleteMessageBatch), and
# permits to receive with (ten per ReceiveMessage). Waiting this little costs no throughput and
# saves most of the small calls when handling, not SQS, is the bottleneck (docs/performance.md).
_DELETE_FILL_S = 0.1
_RECEIVE_FILL_S = 0.05


class Settled(StrEnum):
    DELETED = "deleted"
    DEAD_LETTERED = "dead_lettered"
    RETRY = "retry"
    RELEASED = "released"


class EventHandler(Protocol):
    """What the consumer needs of the domain (worker.handlers.UserEventHandler)."""

    async def prefetch(self, user_ids: Iterable[str]) -> Hints: ...

    async def handle(self, event: Event, hints: Hints | None = None) -> Outcome: ...


@dataclass(frozen=True)
class ConsumerConfig:
    queue_url: str
    dlq_url: str
    max_in_flight: int
    wait_time_s: int
    visibility_timeout_s: int
    max_receive_count: int
    drain_timeout_s: float
    max_attempts: int
    retry_delay_max_s: int = 60

    @property
    def fifo(self) -> bool:
        return self.queue_url.endswith(".fifo")


@dataclass
class _Message:
    raw: dict[str, Any]
    received_at: float
    visible_until: float
    event: Event | None = None

    @property
    def id(self) -> str:
        return str(self.raw["MessageId"])

    @property
    def receipt(self) -> str:
        return str(self.raw["ReceiptHandle"])

    @property
    def group(self) -> str | None:
        group = self.raw.get("Attributes", {}).get("MessageGroupId")
        return None if group is None else str(group)

    @property
    def receive_count(self) -> int:
        return int(self.raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))

    @property
    def trace_id(self) -> str:
        return trace_id(self.raw, self.event)


@dataclass
class _Deleter:
    """Collects receipt handles and deletes them ten at a time (or after a few milliseconds)."""

    client: Any
    queue_url: str
    max_attempts: int
    pending: list[tuple[str, str]] = field(default_factory=list)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, message_id: str, receipt: str) -> None:
        self.pending.append((message_id, receipt))
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() and not self.pending):
            if not self.pending:
                self._wakeup.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event is set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await self._wakeup.wait()
                continue
            await self._fill(stop)
            await self.flush_once()

    async def _fill(self, stop: asyncio.Event) -> None:
        """Wait, briefly, until a full batch is pending (or we are stopping)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DELETE_FILL_S
        while len(self.pending) < _MAX_BATCH and not stop.is_set():
            self._wakeup.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()

    async def flush_once(self) -> None:
        batch, self.pending = self.pending[:_MAX_BATCH], self.pending[_MAX_BATCH:]
        if not batch:
            return
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, (_, r) in enumerate(batch)]
        try:
            response = await call(
                "DeleteMessageBatch",
                self.client.delete_message_batch,
                max_attempts=self.max_attempts,
                QueueUrl=self.queue_url,
                Entries=entries,
            )
        except UserstoreError as exc:
            # The messages come back after their visibility timeout; handling them is idempotent.
            log.warning("delete.failed", count=len(batch), error=exc.reason)
            return
        for failure in response.get("Failed", []):
            message_id = batch[int(failure["Id"])][0]
            log.warning("delete.failed", message_id=message_id, code=failure.get("Code"))

    async def drain(self) -> None:
        while self.pending:
            await self.flush_once()


class SqsConsumer:
    def __init__(
        self,
        client: Any,
        config: ConsumerConfig,
        handler: EventHandler,
        metrics: Metrics,
        reader: MessageReader | None = None,
    ) -> None:
        self._client = client
        self._reader = reader or MessageReader(opener=None, executor=None)
        self._config = config
        self._handler = handler
        self._metrics = metrics
        self._dead_letters = DeadLetterQueue(client, config.dlq_url, config.max_attempts, metrics)
        self._capacity = asyncio.Semaphore(config.max_in_flight)
        self._in_flight: dict[str, _Message] = {}
        self._deleter = _Deleter(client, config.queue_url, config.max_attempts)
        self._batches: set[asyncio.Task[None]] = set()
        self._active_groups: set[str] = set()
        self.receiving = False  # the last receive was answered (readiness)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain. Errors in the background tasks propagate."""
        # FIFO: one receiver per process. Concurrent receives add little (a receive returns up
        # to ten messages and handling overlaps the next receive) and on emulators whose group
        # lock is not atomic (moto) they can hand two receivers the same group at once.
        pollers = (
            1 if self._config.fifo else max(1, min(8, -(-self._config.max_in_flight // _MAX_BATCH)))
        )
        deleter_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._deleter.run(deleter_stop), name="sqs-deleter")
            heartbeat = tg.create_task(self._heartbeat(), name="sqs-heartbeat")
            receivers = [
                tg.create_task(self._receive_loop(stop), name=f"sqs-receiver-{i}")
                for i in range(pollers)
            ]
            await stop.wait()
            for receiver in receivers:
                receiver.cancel()
            await self._drain()
            heartbeat.cancel()
            deleter_stop.set()

    async def _drain(self) -> None:
        if self._batches:
            log.info("drain.start", in_flight=len(self._in_flight))
            _, pending = await asyncio.wait(self._batches, timeout=self._config.drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                # Not lost: unsettled messages come back after their visibility timeout.
                log.warning("drain.timeout", abandoned=len(self._in_flight))
                await asyncio.wait(pending)
        log.info("drain.done")

    async def _receive_loop(self, stop: asyncio.Event) -> None:
        wait_s = 0  # the first receive answers at once: readiness needn't wait out a long poll
        while not stop.is_set():
            permits = await self._acquire_permits()
            try:
                messages = await self._receive(permits, wait_s)
            except BaseException:
                self._release(permits)
                raise
            self._release(permits - len(messages))
            # While work is in flight, poll briefly: a busy queue answers at once anyway, and on
            # moto a long poll does not see FIFO groups unlocked after it started.
            busy = bool(messages or self._in_flight)
            wait_s = min(1, self._config.wait_time_s) if busy else self._config.wait_time_s
            if messages:
                task = asyncio.create_task(self._process_batch(messages))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)

    async def _acquire_permits(self) -> int:
        """Permits for the next receive: at least one, up to a batch, waiting briefly for more.

        When handling is slower than receiving (kms mode: a KMS call per write), permits come back
        one or two at a time; receiving at once would make many small receives, and as many small
        delete batches. Only worth waiting while work in flight can still return permits.
        """
        await self._capacity.acquire()
        permits = 1
        target = min(_MAX_BATCH, self._config.max_in_flight)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RECEIVE_FILL_S
        while permits < target:
            if self._capacity.locked():
                remaining = deadline - loop.time()
                if remaining <= 0 or not self._in_flight:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await self._capacity.acquire()
                except TimeoutError:
                    break
            else:
                await self._capacity.acquire()
            permits += 1
        return permits

    def _release(self, permits: int) -> None:
        for _ in range(permits):
            self._capacity.release()

    async def _receive(self, max_messages: int, wait_s: int) -> list[_Message]:
        try:
            response = await call(
                "ReceiveMessage",
                self._client.receive_message,
                max_attempts=self._config.max_attempts,
                QueueUrl=self._config.queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=self._config.visibility_timeout_s,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except UserstoreError as exc:
            self.receiving = False
            log.warning("receive.failed", error=exc.reason)
            await asyncio.sleep(1.0 + random.random())  # noqa: S311 - jitter, not crypto
            return []
        self.receiving = True
        now = time.monotonic()
        visible_until = now + self._config.visibility_timeout_s
        fresh: list[_Message] = []
        for raw in response.get("Messages", []):
            message = _Message(raw, now, visible_until)
            held = self._in_flight.get(message.id)
            if held is not None:
                # Its visibility ran out while we still work on it and SQS handed it out again.
                # Keep working on the copy we hold, but with the new receipt handle: the old one
                # may no longer delete it. No new permit was used for it.
                held.raw["ReceiptHandle"] = message.receipt
                held.visible_until = visible_until
                log.warning("message.received_again", message_id=message.id)
                continue
            self._in_flight[message.id] = message
            fresh.append(message)
        self._metrics.in_flight.set(len(self._in_flight))
        return fresh

    async def _process_batch(self, messages: list[_Message]) -> None:
        mine: set[str] = set()
        try:
            valid: list[_Message] = []
            held: list[_Message] = []
            stalled: set[str | None] = set()  # FIFO groups with a message coming back first
            for message in messages:
                if self._config.fifo and message.group in stalled:
                    held.append(message)
                    continue
                try:
                    message.event = await self._reader.read(message.raw.get("Body", ""))
                except InvalidEvent as exc:
                    settled = await self._dead_letter(
                        message, exc.reason, "InvalidMessage", exc.event_id
                    )
                except RetryLater as exc:  # a sealed payload while KMS is unreachable
                    event_id = exc.event_id if isinstance(exc, PayloadKeyUnavailable) else None
                    settled = await self._retry_later(
                        message, exc.reason, type(exc).__name__, event_id
                    )
                else:
                    valid.append(message)
                    continue
                if settled is Settled.RETRY:
                    stalled.add(message.group)
            await self._release_untouched(held)
            if not valid:
                return
            hints = await self._prefetch(valid)
            groups: dict[str, list[_Message]] = defaultdict(list)
            for message in valid:
                assert message.event is not None
                key = (
                    message.group if self._config.fifo and message.group else message.event.user_id
                )
                groups[key].append(message)
            busy: list[_Message] = []
            if self._config.fifo:
                # One task per message group in this process. SQS only hands out a group's next
                # message when the previous one is settled, but a visibility timeout that ran
                # out (or moto's concurrent long polls) can break that; ordering must not.
                for key in [k for k in groups if k in self._active_groups]:
                    busy += groups.pop(key)
                mine = set(groups)
                self._active_groups |= mine
            if busy:
                await self._release_untouched(busy, delay_s=1)
            async with asyncio.TaskGroup() as tg:
                for key, group in groups.items():
                    tg.create_task(self._process_group(key, group, hints))
        except Exception as exc:  # a bug in settling: log it, never kill the receive loop
            log.error("batch.unexpected_error", error=type(exc).__name__, frames=frames(exc))
        finally:
            self._active_groups -= mine
            # Whatever happened, every permit of this batch comes back exactly once.
            for message in messages:
                if self._in_flight.pop(message.id, None) is not None:
                    self._capacity.release()
            self._metrics.in_flight.set(len(self._in_flight))

    async def _prefetch(self, messages: list[_Message]) -> Hints:
        user_ids = [m.event.user_id for m in messages if m.event is not None]
        try:
            return await self._handler.prefetch(user_ids)
        except UserstoreError as exc:
            # Each handle() then reads its own record, so a failure (or one malformed record)
            # stays with the events it concerns.
            log.warning("prefetch.failed", error=type(exc).__name__)
            return {}

    async def _process_group(self, key: str, group: list[_Message], hints: Hints) -> None:
        try:
            for index, message in enumerate(group):
                settled = await self._process_one(message, hints)
                if settled is Settled.RETRY and self._config.fifo:
                    await self._release_untouched(group[index + 1 :])
                    return
        finally:
            self._active_groups.discard(key)

    async def _process_one(self, message: _Message, hints: Hints) -> Settled:
        assert message.event is not None
        with message_context(message.id, message.event.event_id, message.trace_id):
            return await self._handle_one(message, hints)

    async def _handle_one(self, message: _Message, hints: Hints) -> Settled:
        event = message.event
        assert event is not None
        started = time.perf_counter()
        bound = log.bind(message_id=message.id, event_id=event.event_id, type=str(event.type))
        try:
            outcome = await self._handler.handle(event, hints)
        except DeadLetter as exc:
            self._metrics.events.labels(str(event.type), "dead_lettered").inc()
            if isinstance(exc, RecordTampered):
                self._metrics.verification_failures.inc()
                bound.error("security.record_verification_failed", error=exc.reason)
            return await self._dead_letter(message, exc.reason, type(exc).__name__, event.event_id)
        except RetryLater as exc:
            self._metrics.events.labels(str(event.type), "failed").inc()
            return await self._retry_later(message, exc.reason, type(exc).__name__)
        except Exception as exc:  # a bug: never let it kill the worker, never log its text
            self._metrics.events.labels(str(event.type), "failed").inc()
            bound.error("message.unexpected_error", error=type(exc).__name__, frames=frames(exc))
            return await self._retry_later(message, "unexpected error", type(exc).__name__)
        finally:
            self._metrics.handling_seconds.labels(str(event.type)).observe(
                time.perf_counter() - started
            )
        self._metrics.events.labels(str(event.type), str(outcome)).inc()
        bound.info("message.handled", outcome=str(outcome))
        self._settle(message)
        return Settled.DELETED

    def _settle(self, message: _Message) -> None:
        self._deleter.add(message.id, message.receipt)
        if self._in_flight.pop(message.id, None) is not None:
            self._capacity.release()
            self._metrics.in_flight.set(len(self._in_flight))

    async def _retry_later(
        self, message: _Message, reason: str, error: str, event_id: str | None = None
    ) -> Settled:
        event = message.event
        event_id = event.event_id if event else event_id
        if message.receive_count >= self._config.max_receive_count:
            # Last allowed receive: dead-letter it ourselves, so the DLQ says why.
            give_up = f"gave up after {message.receive_count} attempts: {reason}"
            return await self._dead_letter(message, give_up, error, event_id)
        delay = min(self._config.retry_delay_max_s, 2**message.receive_count)
        delay = random.randint(delay // 2, delay)  # noqa: S311 - jitter, not crypto
        self._metrics.retries.labels(error).inc()
        log.warning(
            "message.retry_later",
            message_id=message.id,
            event_id=event_id,
            error=error,
            reason=reason,
            delay_s=delay,
        )
        await self._change_visibility([message], delay)
        self._forget(message)
        return Settled.RETRY

    async def _release_untouched(self, messages: list[_Message], delay_s: int = 0) -> None:
        if messages:
            await self._change_visibility(messages, delay_s)
            for message in messages:
                self._forget(message)
            log.info("group.released", count=len(messages), message_id=messages[0].id)

    async def _dead_letter(
        self, message: _Message, reason: str, error: str, event_id: str | None
    ) -> Settled:
        with message_context(message.id, event_id, message.trace_id):
            sent = await self._dead_letters.send(
                message.raw.get("Body", ""),
                message.id,
                message.group,
                reason,
                error,
                event_id,
                trace_id=message.trace_id,
                receive_count=message.receive_count,
                event_type=str(message.event.type) if message.event is not None else None,
            )
        if not sent:
            # Leave it on the queue: SQS redrive still moves it to the DLQ eventually.
            self._forget(message)
            return Settled.RETRY
        self._settle(message)
        return Settled.DEAD_LETTERED

    def _forget(self, message: _Message) -> None:
        if self._in_flight.pop(message.id, None) is not None:
            self._capacity.release()
            self._metrics.in_flight.set(len(self._in_flight))

    async def _change_visibility(self, messages: list[_Message], timeout_s: int) -> None:
        for start in range(0, len(messages), _MAX_BATCH):
            chunk = messages[start : start + _MAX_BATCH]
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": timeout_s}
                for i, m in enumerate(chunk)
            ]
            try:
                response = await call(
                    "ChangeMessageVisibilityBatch",
                    self._client.change_message_visibility_batch,
                    max_attempts=self._config.max_attempts,
                    QueueUrl=self._config.queue_url,
                    Entries=entries,
                )
            except UserstoreError as exc:
                log.warning("visibility.failed", count=len(chunk), error=exc.reason)
                continue
            for failure in response.get("Failed", []):
                log.warning(
                    "visibility.failed",
                    message_id=chunk[int(failure["Id"])].id,
                    code=failure.get("Code"),
                )
            if timeout_s > 0:
                until = time.monotonic() + timeout_s
                for message in chunk:
                    message.visible_until = until

    async def _heartbeat(self) -> None:
        """Extend the visibility of messages still being worked on before it runs out."""
        timeout = self._config.visibility_timeout_s
        # Wake four times per timeout; extend whatever has half of it or less left, which leaves
        # at least a quarter of the timeout as margin for the call itself.
        period = max(0.25, timeout / 4)
        while True:
            await asyncio.sleep(period)
            soon = time.monotonic() + timeout / 2
            due = [m for m in list(self._in_flight.values()) if m.visible_until <= soon]
            if due:
                await self._change_visibility(due, timeout)
                log.debug("visibility.extended", count=len(due))


__all__ = ["ConsumerConfig", "EventHandler", "Settled", "SqsConsumer"]
