"""The SQS consumer's loop on an in-memory queue (tests/fakes/memory_queue.py): how each message is
settled, with no emulator."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.handler import ScriptedHandler, event_body
from tests.fakes.memory_queue import FakeQueue
from tests.harness.consuming import MAX_RECEIVES, consume


def attribute(message: Any, name: str) -> str:
    return str(message.attributes[name]["StringValue"])


async def test_a_failing_message_is_dead_lettered_on_its_last_receive_with_why() -> None:
    queue, dlq = FakeQueue(), FakeQueue()
    last = queue.put(event_body("e-1"), received=MAX_RECEIVES - 1)
    queue.put(event_body("e-2", user="v"))
    handler = ScriptedHandler(retry={"e-1"})
    metrics = await consume(queue, dlq, handler, until=lambda: not queue.stored)
    assert sorted(queue.deleted) == sorted([last, "m-1"])
    [dead] = dlq.sent
    assert dead.body == event_body("e-1")  # untouched
    assert attribute(dead, "userstore.reason") == "gave up after 5 attempts: injected"
    assert attribute(dead, "userstore.error") == "AwsUnavailable"
    assert attribute(dead, "userstore.event_type") == "user.created"
    assert attribute(dead, "userstore.receive_count") == "5"
    assert metrics.count("userstore_dead_letters", {"error": "AwsUnavailable"}) == 1


async def test_a_fifo_group_is_held_behind_a_failure_and_handled_in_order() -> None:
    queue, dlq = FakeQueue(fifo=True), FakeQueue(fifo=True)
    ids = {e: queue.put(event_body(e, user=e[0]), group=e[0]) for e in ("a1", "a2", "a3", "b1")}
    handler = ScriptedHandler(retry_once={"a2"})
    metrics = await consume(queue, dlq, handler, until=lambda: not queue.stored)
    # a1..a3 came in one receive, one burst: a2 failed, so a3 was held (untouched, though the
    # handler answered it) and handed out again behind a2.
    assert [b for b in handler.bursts if b[0].startswith("a")] == [["a1", "a2", "a3"], ["a2", "a3"]]
    assert "b1" in handler.seen
    assert ([ids["a2"]], 0) in queue.visibility_changes  # retried (no delay in this test)
    assert ([ids["a3"]], 0) in queue.visibility_changes  # held: released untouched
    assert dlq.sent == []
    assert metrics.count("userstore_message_retries", {"error": "AwsUnavailable"}) == 1


async def test_an_invalid_body_is_dead_lettered_as_invalid_message_and_its_group_goes_on() -> None:
    queue, dlq = FakeQueue(fifo=True), FakeQueue(fifo=True)
    bad = json.dumps({"type": "user.created", "event_id": "bad-1", "user_id": "a"})
    queue.put(bad, group="a")
    queue.put(event_body("a2", user="a"), group="a")
    handler = ScriptedHandler()
    await consume(queue, dlq, handler, until=lambda: not queue.stored)
    assert handler.seen == ["a2"]
    [dead] = dlq.sent
    assert (dead.body, dead.group, dead.deduplication_id) == (bad, "a", "m-0")
    assert attribute(dead, "userstore.error") == "InvalidMessage"
    assert attribute(dead, "userstore.event_id") == "bad-1"
    assert attribute(dead, "userstore.event_type") == "user.created"


async def test_a_dead_letter_that_cannot_be_sent_stays_on_the_queue_and_holds_its_group() -> None:
    queue, dlq = FakeQueue(fifo=True), FakeQueue(fifo=True, fail_sends=True)
    first = queue.put(event_body("a1", user="a"), group="a")
    queue.put(event_body("a2", user="a"), group="a")
    handler = ScriptedHandler(dead={"a1"})
    changed = lambda: bool(queue.visibility_changes)  # noqa: E731 - the held a2 was released
    await consume(queue, dlq, handler, until=changed)
    # One burst: a2 was applied with it (handed out again, it is a duplicate), but its message
    # stays behind a1's all the same.
    assert handler.bursts == [["a1", "a2"]]
    assert queue.deleted == []  # not lost: SQS hands it out again (or its redrive moves it)
    assert [first] not in [ids for ids, _ in queue.visibility_changes]  # left alone
    assert queue.visibility_changes == [(["m-1"], 0)]
