"""Bursts through the queue loops (the consumer, the Lambda batch) on in-memory queues and the
real handler over the in-memory table: a receive takes a group's messages together, they are
applied in one write, and every message is settled on its own outcome under the FIFO rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes.handler import ScriptedHandler, event_body
from tests.fakes.memory_queue import FakeQueue
from tests.harness.consuming import consume
from tests.harness.factories import event_dict
from tests.harness.memory_world import World, id_tags, memory_world
from tests.harness.model import expected_profiles
from userstore.worker.dead_letters import DeadLetterSender
from userstore.worker.errors import AwsUnavailable
from userstore.worker.lambda_events import message_from_lambda
from userstore.worker.lambdas import SqsBatch
from userstore.worker.message_reader import MessageReader
from userstore.worker.metrics import Metrics
from userstore.worker.profile import Event
from userstore.worker.settlement import Limits

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
USER = "urn:fdc:gov.uk:2022:burst"


def event(
    event_id: str, kind: str, minutes: float, data: Any = None, user: str = USER
) -> dict[str, Any]:
    """An event dated `minutes` after an hour before NOW."""
    return event_dict(user, kind, 60 * (minutes - 60), data, base=NOW, event_id=event_id)


CREATED = event("e-create", "user.created", 0, {"attributes": {f"a{i}": i for i in range(30)}})
TOO_MANY = event("e-poison", "user.updated", 5, {"attributes": {f"b{i}": i for i in range(30)}})
RENAMED = event("e-rename", "user.updated", 10, {"given_name": "Grace"})


def updates(count: int, user: str = USER) -> list[dict[str, Any]]:
    return [
        event(f"e-{user[-4:]}-{n}", "user.updated", 1 + n, {"family_name": f"F{n}"}, user)
        for n in range(count)
    ]


def enqueue(queue: FakeQueue, events: list[dict[str, Any]]) -> list[str]:
    return [queue.put(json.dumps(e), group=e["user_id"] if queue.fifo else None) for e in events]


def emptied(queue: FakeQueue) -> Callable[[], bool]:
    return lambda: not queue.stored


def applied(metrics: Metrics) -> float:
    return metrics.count("userstore_events", {"type": "user.updated", "outcome": "applied"})


class BlindLongPolls(FakeQueue):
    """As moto: a long poll that finds nothing waits its whole time, blind to a group unlocked
    meanwhile. Counts such waits while messages were still queued."""

    blind_waits = 0

    async def receive(self, max_messages: int, *, wait_s: int, visibility_timeout_s: int) -> Any:
        found = await super().receive(
            max_messages, wait_s=wait_s, visibility_timeout_s=visibility_timeout_s
        )
        if not found and wait_s > 0 and self.stored:
            self.blind_waits += 1
            await asyncio.sleep(wait_s)
        return found


class Unhurried(ScriptedHandler):
    """Takes a moment per burst, as a real write does: the next poll starts meanwhile."""

    async def handle_burst(self, events: Sequence[Event], hints: Any = None) -> list[Any]:
        await asyncio.sleep(0.1)
        return await super().handle_burst(events, hints)


async def test_a_receive_takes_a_group_ten_at_a_time_and_never_waits_out_a_poll() -> None:
    queue, dlq = BlindLongPolls(fifo=True), FakeQueue(fifo=True)
    ids = [f"e{n:02d}" for n in range(25)]
    for event_id in ids:
        queue.put(event_body(event_id), group="u")
    handler = Unhurried()
    await consume(queue, dlq, handler, until=emptied(queue), max_in_flight=16)
    assert handler.bursts == [ids[:10], ids[10:20], ids[20:]]
    # Before: each ten waited out a poll begun while they were in flight (a second each here).
    assert queue.blind_waits == 0


async def test_a_users_events_in_a_receive_are_one_write() -> None:
    w = memory_world(NOW)
    queue, dlq = FakeQueue(fifo=True), FakeQueue(fifo=True)
    events = [CREATED, *updates(11)]
    enqueue(queue, events)
    metrics = await consume(queue, dlq, w.handler, until=emptied(queue))
    assert w.table.calls["put"] == 2  # ten per receive
    assert w.keys.calls["seal"] == 2
    assert await w.view(USER) == expected_profiles(events)[USER]
    assert applied(metrics) == 11
    assert len(queue.deleted) == 12
    bursts = [
        metrics.registry.get_sample_value(f"userstore_burst_events_{s}") for s in ("count", "sum")
    ]
    assert bursts == [2, 12]


async def test_a_failed_write_retries_its_events_and_holds_the_rest_of_the_group() -> None:
    w = memory_world(NOW)
    queue, dlq = FakeQueue(fifo=True), FakeQueue(fifo=True)
    events = [CREATED, RENAMED, *updates(3)]
    ids = enqueue(queue, events)

    async def unavailable(_: Any) -> None:
        raise AwsUnavailable("injected")

    w.table.before_put = unavailable  # the first write only
    metrics = await consume(queue, dlq, w.handler, until=emptied(queue))
    assert (ids[:1], 0) in queue.visibility_changes  # retried (no delay in this test)
    assert (ids[1:], 0) in queue.visibility_changes  # held, untouched: released together
    assert metrics.count("userstore_message_retries", {"error": "AwsUnavailable"}) == 1
    assert w.table.calls["put"] == 2  # the failed burst, then all of it again
    assert w.remembered(USER) == id_tags(*(e["event_id"] for e in events))  # in order
    assert await w.view(USER) == expected_profiles(events)[USER]
    assert dlq.sent == []


@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "standard"])
async def test_a_poison_event_in_a_burst_is_dead_lettered_alone(fifo: bool) -> None:
    w = memory_world(NOW)
    queue, dlq = FakeQueue(fifo=fifo), FakeQueue(fifo=fifo)
    ids = enqueue(queue, [CREATED, TOO_MANY, RENAMED])
    metrics = await consume(queue, dlq, w.handler, until=emptied(queue))
    [dead] = dlq.sent
    assert json.loads(dead.body)["event_id"] == "e-poison"
    assert dead.attributes["userstore.error"]["StringValue"] == "InvalidResult"
    assert sorted(queue.deleted) == sorted(ids)
    assert w.table.calls["put"] == 1
    assert await w.view(USER) == expected_profiles([CREATED, RENAMED])[USER]
    assert applied(metrics) == 1


async def test_duplicates_in_a_burst_cost_no_write() -> None:
    w = memory_world(NOW)
    queue, dlq = FakeQueue(fifo=True), FakeQueue(fifo=True)
    enqueue(queue, [CREATED, CREATED, RENAMED, RENAMED, CREATED])
    metrics = await consume(queue, dlq, w.handler, until=emptied(queue))
    assert w.table.calls["put"] == 1
    assert metrics.count("userstore_events", {"type": "user.created", "outcome": "duplicate"}) == 2
    assert metrics.count("userstore_events", {"type": "user.updated", "outcome": "duplicate"}) == 1


@pytest.mark.parametrize("max_in_flight", [3, 10])
async def test_a_standard_queue_coalesces_each_users_events_in_any_order(
    max_in_flight: int,
) -> None:
    """Standard queues: a user's events in one receive are one burst; burst boundaries (the
    receive size) and order change nothing in the stored state."""
    other = "urn:fdc:gov.uk:2022:other"
    events = [CREATED, *updates(4), RENAMED, event("o-create", "user.created", 0, {}, other)]
    events += updates(3, other)  # ten: one receive can take them all
    states = []
    for order in (events, events[::-1]):
        w = memory_world(NOW)
        queue, dlq = FakeQueue(), FakeQueue()
        enqueue(queue, order)
        await consume(queue, dlq, w.handler, until=emptied(queue), max_in_flight=max_in_flight)
        assert await w.view(USER) == expected_profiles(events)[USER]
        assert await w.view(other) == expected_profiles(events)[other]
        if max_in_flight == 10:  # one receive, one poller: a write per user
            assert w.table.calls["put"] == 2
        states.append((await w.state(USER), await w.state(other)))
    assert states[0] == states[1]


def records(events: list[dict[str, Any]], fifo: bool) -> list[Any]:
    return [
        message_from_lambda(
            {
                "messageId": f"m{n}",
                "body": json.dumps(e),
                "attributes": {"ApproximateReceiveCount": "1"}
                | ({"MessageGroupId": e["user_id"]} if fifo else {}),
                "eventSource": "aws:sqs",
            }
        )
        for n, e in enumerate(events)
    ]


def lambda_batch(w: World, dlq: FakeQueue) -> SqsBatch:
    reader = MessageReader(opener=None, executor=None)
    metrics = Metrics()
    return SqsBatch(
        reader, w.handler, DeadLetterSender(dlq, metrics), Limits(5), metrics, max_in_flight=4
    )


@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "standard"])
async def test_the_lambda_batch_coalesces_a_users_events_the_same_way(fifo: bool) -> None:
    w = memory_world(NOW)
    dlq = FakeQueue(fifo=fifo)
    events = [CREATED, *updates(4), TOO_MANY, RENAMED, CREATED]
    assert await lambda_batch(w, dlq).run(records(events, fifo)) == []
    assert w.table.calls["put"] == 1
    assert [json.loads(m.body)["event_id"] for m in dlq.sent] == ["e-poison"]
    good = [e for e in events if e is not TOO_MANY]
    assert await w.view(USER) == expected_profiles(good)[USER]


async def test_the_lambda_batch_reports_a_failed_write_and_the_rest_of_the_group() -> None:
    w = memory_world(NOW)
    events = [CREATED, RENAMED, *updates(2)]

    async def unavailable(_: Any) -> None:
        raise AwsUnavailable("injected")

    w.table.before_put = unavailable
    failed = await lambda_batch(w, FakeQueue(fifo=True)).run(records(events, fifo=True))
    assert failed == ["m0", "m1", "m2", "m3"]
    assert w.table.items == {}


class ThreeAtATime(BlindLongPolls):
    """Hands out at most three messages per receive and counts DeleteMessageBatch calls."""

    delete_calls = 0

    async def receive(self, max_messages: int, *, wait_s: int, visibility_timeout_s: int) -> Any:
        return await super().receive(
            min(3, max_messages), wait_s=wait_s, visibility_timeout_s=visibility_timeout_s
        )

    async def delete(self, receipts: Sequence[str]) -> Any:
        self.delete_calls += 1
        return await super().delete(receipts)


async def test_single_message_groups_share_delete_calls() -> None:
    # A backlog of users' single events, received a few at a time (as when handling is slow and
    # permits come back one by one): no group has more queued behind it, so the deletes fill a
    # DeleteMessageBatch across receives instead of one call per receive.
    queue, dlq = ThreeAtATime(fifo=True), FakeQueue(fifo=True)
    ids = [queue.put(event_body(f"e-u{n}", user=f"u{n}"), group=f"u{n}") for n in range(30)]
    handler = ScriptedHandler()
    await consume(queue, dlq, handler, until=emptied(queue), max_in_flight=3)
    assert len(handler.bursts) == 30  # a burst per user
    assert sorted(queue.deleted) == sorted(ids)
    assert queue.delete_calls <= 5  # ten, one per receive, when each batch sent its own


async def test_a_groups_next_message_is_not_held_behind_a_delete_waiting_to_fill() -> None:
    # One message of a group, then its next: the first's delete waits to fill, and the receiver
    # must poll again once it is sent, not start a (moto-blind) long poll meanwhile.
    queue, dlq = BlindLongPolls(fifo=True), FakeQueue(fifo=True)
    first = queue.put(event_body("e-first", user="u"), group="u")
    handler = ScriptedHandler()
    done = asyncio.Event()

    def follow_up() -> bool:
        if not done.is_set() and first in queue.deleted:
            done.set()
        return done.is_set() and not queue.stored

    original = handler.handle_burst

    async def then_queue_the_next(events: Sequence[Event], hints: Any = None) -> list[Any]:
        answers = await original(events, hints)
        if [e.event_id for e in events] == ["e-first"]:
            queue.put(event_body("e-next", user="u"), group="u")
        return answers

    handler.handle_burst = then_queue_the_next  # type: ignore[method-assign]
    await consume(queue, dlq, handler, until=follow_up)
    assert handler.bursts == [["e-first"], ["e-next"]]
    assert queue.blind_waits == 0
