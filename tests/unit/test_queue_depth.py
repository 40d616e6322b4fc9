"""Deciding a queue is empty from approximate counts: one zero reading is never enough."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.harness.waiting import wait_drained
from userstore.worker.queue_depth import Emptiness, settled_depth


def test_one_zero_reading_between_others_is_not_empty() -> None:
    empty = Emptiness(settle_s=1.0)
    # A message whose visibility runs out between the two counts is in neither (moto).
    assert not empty.observe(1, now=0.0)
    assert not empty.observe(0, now=0.2)
    assert not empty.observe(1, now=0.4)
    assert not empty.observe(0, now=0.6)
    assert not empty.observe(0, now=1.5)
    assert empty.observe(0, now=1.6)


def test_a_reading_that_sees_a_message_starts_the_settling_again() -> None:
    empty = Emptiness(settle_s=1.0)
    assert not empty.observe(0, now=0.0)
    assert not empty.observe(2, now=0.9)
    assert not empty.observe(0, now=1.0)
    assert not empty.observe(0, now=1.9)
    assert empty.observe(0, now=2.0)


async def test_settled_depth_is_the_deepest_of_its_readings() -> None:
    readings = iter([0, 1, 0])

    async def read() -> int:
        return next(readings)

    assert await settled_depth(read, readings=3, interval_s=0) == 1


async def test_settled_depth_says_zero_only_when_every_reading_did() -> None:
    calls = 0

    async def read() -> int:
        nonlocal calls
        calls += 1
        return 0

    assert await settled_depth(read, readings=3, interval_s=0) == 0
    assert calls == 3


class _ScriptedSqs:
    """GetQueueAttributes answers from a script of (visible, in flight) pairs; the last repeats."""

    def __init__(self, script: list[tuple[int, int]]) -> None:
        self._script = itertools.chain(script, itertools.repeat(script[-1]))
        self.answered = 0

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        visible, in_flight = next(self._script)
        self.answered += 1
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": str(visible),
                "ApproximateNumberOfMessagesNotVisible": str(in_flight),
            }
        }


def test_wait_drained_does_not_take_a_glitch_for_an_empty_queue() -> None:
    # In flight, then one reading that misses it as it becomes visible again, then waiting.
    sqs = _ScriptedSqs([(0, 1), (0, 0), (1, 0), (1, 0)])
    with pytest.raises(AssertionError, match="did not drain"):
        wait_drained(sqs, "url", timeout_s=1.5)
    assert sqs.answered > 2


def test_wait_drained_returns_once_the_queue_stays_empty() -> None:
    sqs = _ScriptedSqs([(1, 0), (0, 1), (0, 0)])
    wait_drained(sqs, "url", timeout_s=5)
    assert sqs.answered >= 7  # two non-empty readings, then a second of zeros at 0.2 s
