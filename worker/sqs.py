"""The SQS consumer: receive -> parse -> handle -> settle, with bounded concurrency.

What becomes of each message is decided by the settlement policy (worker.settlement: deleted,
retried after a jittered backoff, dead-lettered with the reason, or held behind a failure of
its FIFO group); this module carries the decision out over the queue port (worker.ports.Queue):
deletes in batches of up to ten, visibility changes, the dead-letter send.

While a message is being worked on its visibility is extended. On stop, receiving stops, work in
flight gets `drain_timeout_s` to finish, and pending deletes are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from dataclasses import dataclass

from . import handling
from .batched_deletes import BatchedDeletes
from .dead_letters import ERROR_ATTRIBUTE as ERROR_ATTRIBUTE
from .dead_letters import EVENT_ID_ATTRIBUTE as EVENT_ID_ATTRIBUTE
from .dead_letters import EVENT_TYPE_ATTRIBUTE as EVENT_TYPE_ATTRIBUTE
from .dead_letters import REASON_ATTRIBUTE as REASON_ATTRIBUTE
from .dead_letters import RECEIVE_COUNT_ATTRIBUTE as RECEIVE_COUNT_ATTRIBUTE
from .dead_letters import SOURCE_ID_ATTRIBUTE as SOURCE_ID_ATTRIBUTE
from .dead_letters import DeadLetterSender
from .errors import UserstoreError
from .handlers import Hints
from .handling import Delivery, EventHandler, Reader
from .logs import frames, get_logger
from .message_reader import MessageReader
from .metrics import Metrics
from .ports import MAX_BATCH, Queue, QueueMessage
from .profile import Event
from .settlement import Action, Decision, Group, Limits, settle, unsent
from .tracing import message_context

log = get_logger("userstore.sqs")

# How long a partial batch may wait to fill with permits to receive with (ten per ReceiveMessage;
# deletes wait likewise, see worker.batched_deletes). Waiting this little costs no throughput and
# saves most of the small calls when handling, not SQS, is the bottleneck (docs/performance.md).
_RECEIVE_FILL_S = 0.05


@dataclass(frozen=True)
class ConsumerConfig:
    queue_url: str
    dlq_url: str
    max_in_flight: int
    wait_time_s: int
    visibility_timeout_s: int
    max_receive_count: int
    drain_timeout_s: float
    retry_delay_max_s: int = 60

    @property
    def fifo(self) -> bool:
        return self.queue_url.endswith(".fifo")

    @property
    def limits(self) -> Limits:
        return Limits(self.max_receive_count, self.retry_delay_max_s)


@dataclass
class _Message:
    """A received message while this process works on it."""

    received: QueueMessage
    receipt: str  # the latest: a message received again gets a new one
    visible_until: float
    event: Event | None = None

    @property
    def id(self) -> str:
        return self.received.id

    @property
    def group(self) -> str | None:
        return self.received.group

    @property
    def trace_id(self) -> str:
        return self.received.trace_id(self.event)

    @property
    def delivery(self) -> Delivery:
        assert self.event is not None
        return Delivery(self.id, self.trace_id, self.event)


class SqsConsumer:
    def __init__(
        self,
        queue: Queue,
        dead_letters: DeadLetterSender,
        config: ConsumerConfig,
        handler: EventHandler,
        metrics: Metrics,
        reader: Reader | None = None,
    ) -> None:
        self._queue = queue
        self._dead_letters = dead_letters
        self._reader = reader or MessageReader(opener=None, executor=None)
        self._config = config
        self._handler = handler
        self._metrics = metrics
        self._capacity = asyncio.Semaphore(config.max_in_flight)
        self._in_flight: dict[str, _Message] = {}
        # FIFO: a group's next messages come out once its deletes are sent: poll then.
        self._deleter = BatchedDeletes(queue, on_sent=self._wake_receiver if config.fifo else None)
        self._batches: set[asyncio.Task[None]] = set()
        self._active_groups: set[str] = set()
        self._settled = asyncio.Event()  # FIFO: a batch was settled, or deletes were sent
        self.receiving = False  # the last receive was answered (readiness)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain. Errors in the background tasks propagate."""
        # FIFO: one receiver per process. Concurrent receives add little (a receive returns up
        # to ten messages and handling overlaps the next receive) and on emulators whose group
        # lock is not atomic (moto) they can hand two receivers the same group at once.
        pollers = (
            1 if self._config.fifo else max(1, min(8, -(-self._config.max_in_flight // MAX_BATCH)))
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
            self._settled.clear()  # a batch settled from here on wakes an empty poll at once
            try:
                messages = await self._receive(permits, wait_s)
            except BaseException:
                self._release(permits)
                raise
            self._release(permits - len(messages))
            busy = bool(messages or self._batches)  # FIFO: their groups are locked
            if not busy and not self._deleter.idle:
                # Nothing in hand: send the deletes still filling a batch now, so that their
                # groups are unlocked before a long poll (blind to groups unlocked later on moto).
                await self._deleter.flush()
            wait_s = min(1, self._config.wait_time_s) if busy else self._config.wait_time_s
            if messages:
                task = asyncio.create_task(self._process_batch(messages))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
            if busy and self._config.fifo:
                if not messages:
                    await self._settled_or(wait_s)
                wait_s = 0

    def _wake_receiver(self) -> None:
        self._settled.set()

    async def _settled_or(self, timeout_s: float) -> None:
        """FIFO, with work in flight and nothing received: wait until a batch is settled (its
        groups may have more) or `timeout_s` passes, then poll at once.

        While work is in flight, FIFO polls are short: SQS hands out a group's next messages
        only once those in flight are deleted, and a long poll on moto does not see a group
        unlocked after it started, so a user's burst would wait out a poll every ten messages.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._settled.wait()

    async def _acquire_permits(self) -> int:
        """Permits for the next receive: at least one, up to a batch, waiting briefly for more.

        When handling is slower than receiving (kms mode: a KMS call per write), permits come back
        one or two at a time; receiving at once would make many small receives, and as many small
        delete batches. Only worth waiting while work in flight can still return permits.
        """
        await self._capacity.acquire()
        permits = 1
        target = min(MAX_BATCH, self._config.max_in_flight)
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
            received = await self._queue.receive(
                max_messages, wait_s=wait_s, visibility_timeout_s=self._config.visibility_timeout_s
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
        for one in received:
            held = self._in_flight.get(one.id)
            if held is not None:
                # Its visibility ran out while we still work on it and SQS handed it out again.
                # Keep working on the copy we hold, but with the new receipt handle: the old one
                # may no longer delete it. No new permit was used for it.
                held.receipt = one.receipt
                held.visible_until = visible_until
                log.warning("message.received_again", message_id=one.id)
                continue
            message = _Message(one, one.receipt, visible_until)
            self._in_flight[message.id] = message
            fresh.append(message)
        self._metrics.in_flight.set(len(self._in_flight))
        return fresh

    async def _process_batch(self, messages: list[_Message]) -> None:
        mine: set[str] = set()  # the FIFO groups this batch works on
        try:
            valid = await self._read_all(messages)
            if valid:
                await self._process_valid(valid, mine)
            if self._config.fifo:
                if _bursting(messages):
                    # A group that came several at a time likely has more queued, which SQS
                    # hands out once these are deleted: delete them now (a single message's
                    # delete joins the next ones, up to _DELETE_FILL_S later: fewer calls).
                    await self._deleter.flush()
                self._settled.set()
        except Exception as exc:  # a bug in settling: log it, never kill the receive loop
            log.error("batch.unexpected_error", error=type(exc).__name__, frames=frames(exc))
        finally:
            self._active_groups -= mine
            # Whatever happened, every permit of this batch comes back exactly once.
            for message in messages:
                if self._in_flight.pop(message.id, None) is not None:
                    self._capacity.release()
            self._metrics.in_flight.set(len(self._in_flight))

    async def _process_valid(self, valid: list[_Message], mine: set[str]) -> None:
        hints = await self._prefetch(valid)
        groups: dict[str, list[_Message]] = defaultdict(list)
        for message in valid:
            assert message.event is not None
            key = message.group if self._config.fifo and message.group else message.event.user_id
            groups[key].append(message)
        busy: list[_Message] = []
        if self._config.fifo:
            # One task per message group in this process. SQS only hands out a group's next
            # message when the previous one is settled, but a visibility timeout that ran out
            # (or moto's concurrent long polls) can break that; ordering must not.
            for key in [k for k in groups if k in self._active_groups]:
                busy += groups.pop(key)
            mine |= set(groups)
            self._active_groups |= mine
        if busy:
            await self._release_untouched(busy, delay_s=1)
        async with asyncio.TaskGroup() as tg:
            for key, group in groups.items():
                tg.create_task(self._process_group(key, group, hints))

    async def _read_all(self, messages: list[_Message]) -> list[_Message]:
        """Parse each message; settle those that fail. The ones that parsed, in order."""
        valid: list[_Message] = []
        held: list[_Message] = []
        failed_groups: set[str | None] = set()  # FIFO groups with a message coming back first
        for message in messages:
            group = self._group(failed=message.group in failed_groups)
            if group is Group.FAILED:
                decision = self._decide(message, None, group)
            else:
                with message_context(message.id, None, message.trace_id):
                    read = await handling.read(self._reader, message.received.body)
                if not isinstance(read, Exception):
                    message.event = read
                    valid.append(message)
                    continue
                decision = self._decide(message, read, group)
                with message_context(message.id, decision.event_id, message.trace_id):
                    decision = await self._carry_out(message, decision)
            if decision.action is Action.HOLD:
                held.append(message)
            if decision.holds_group:
                failed_groups.add(message.group)
        await self._release_untouched(held)
        return valid

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
        held: list[_Message] = []  # behind a failure of their FIFO group: released together

        async def settle_one(
            message: _Message, delivery: Delivery, failure: Exception | None, state: Group
        ) -> Decision:
            decision = self._decide(message, failure, state)
            if decision.action is Action.HOLD:
                held.append(message)
                return decision
            with message_context(message.id, delivery.event.event_id, delivery.trace_id):
                return await self._carry_out(message, decision)

        try:
            deliveries = [(message, message.delivery) for message in group]
            state = self._group(failed=False)
            await handling.handle_in_order(
                self._handler, deliveries, hints, self._metrics, state, settle_one
            )
            await self._release_untouched(held)
        finally:
            self._active_groups.discard(key)

    def _group(self, *, failed: bool) -> Group:
        if not self._config.fifo:
            return Group.NONE
        return Group.FAILED if failed else Group.CLEAR

    def _decide(self, message: _Message, failure: BaseException | None, group: Group) -> Decision:
        return settle(
            failure,
            message.received.receive_count,
            self._config.limits,
            group,
            jitter=random.random(),  # noqa: S311 - jitter, not crypto
        )

    async def _carry_out(self, message: _Message, decision: Decision) -> Decision:
        """Do what the policy decided (HOLD is carried out by the caller, for the whole group)."""
        event = message.event
        event_id = event.event_id if event is not None else decision.event_id
        if decision.action is Action.ACKNOWLEDGE:
            self._acknowledge(message)
        elif decision.action is Action.RETRY:
            handling.report_retry(decision, message.id, event_id, self._metrics, with_delay=True)
            await self._change_visibility([message], decision.delay_s)
            self._forget(message)
        elif decision.action is Action.DEAD_LETTER:
            sent = await self._dead_letters.send(
                message.received,
                decision.reason or "",
                decision.error or "",
                event_id,
                trace_id=message.trace_id,
                event_type=str(event.type) if event is not None else decision.event_type,
            )
            if sent:
                self._acknowledge(message)
            else:
                decision = unsent(decision)
        if decision.action is Action.LEAVE:
            self._forget(message)
        return decision

    def _acknowledge(self, message: _Message) -> None:
        self._deleter.add(message.id, message.receipt)
        self._forget(message)

    async def _release_untouched(self, messages: list[_Message], delay_s: int = 0) -> None:
        if messages:
            await self._change_visibility(messages, delay_s)
            for message in messages:
                self._forget(message)
            log.info("group.released", count=len(messages), message_id=messages[0].id)

    def _forget(self, message: _Message) -> None:
        if self._in_flight.pop(message.id, None) is not None:
            self._capacity.release()
            self._metrics.in_flight.set(len(self._in_flight))

    async def _change_visibility(self, messages: list[_Message], timeout_s: int) -> None:
        for start in range(0, len(messages), MAX_BATCH):
            chunk = messages[start : start + MAX_BATCH]
            try:
                failures = await self._queue.change_visibility(
                    [m.receipt for m in chunk], timeout_s
                )
            except UserstoreError as exc:
                log.warning("visibility.failed", count=len(chunk), error=exc.reason)
                continue
            for failure in failures:
                log.warning(
                    "visibility.failed", message_id=chunk[failure.index].id, code=failure.code
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


def _bursting(messages: list[_Message]) -> bool:
    """Whether a FIFO batch holds several messages of one group."""
    groups = [message.group for message in messages]
    return len(set(groups)) < len(groups)


__all__ = ["ConsumerConfig", "EventHandler", "SqsConsumer"]
