"""The Lambda SQS batch rules with small fakes: which records are reported failed, in what order."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from tests.fakes.handler import ScriptedHandler, event_body
from tests.fakes.memory_queue import FakeQueue
from userstore.worker.dead_letters import DeadLetterSender
from userstore.worker.errors import InvalidMessage
from userstore.worker.handlers import Outcome
from userstore.worker.lambdas import (
    InvalidSweepInput,
    SqsBatch,
    SweepInput,
    _time_budget_s,
    message_from_lambda,
    stream_record_from_lambda,
    sweep_input,
)
from userstore.worker.message_reader import MessageReader
from userstore.worker.metrics import Metrics
from userstore.worker.ports import QueueMessage
from userstore.worker.profile import Event
from userstore.worker.settlement import Limits
from userstore.worker.streams import EventName
from userstore.worker.sweep import page_limit


def batch(handler: ScriptedHandler, sqs: FakeQueue | None = None) -> SqsBatch:
    dead_letters = DeadLetterSender(FakeQueue(fifo=True) if sqs is None else sqs, Metrics())
    reader = MessageReader(opener=None, executor=None)
    return SqsBatch(reader, handler, dead_letters, Limits(5), Metrics(), max_in_flight=4)


def record(message_id: str, body: str, group: str | None, receives: int = 1) -> QueueMessage:
    attributes = {"ApproximateReceiveCount": str(receives)}
    if group is not None:
        attributes["MessageGroupId"] = group
    return message_from_lambda(
        {"messageId": message_id, "body": body, "attributes": attributes, "eventSource": "aws:sqs"}
    )


async def test_fifo_failure_fails_the_rest_of_its_group_only() -> None:
    records = [
        record("m1", event_body("a1"), "A"),
        record("m2", event_body("b1"), "B"),
        record("m3", event_body("a2"), "A"),
        record("m4", event_body("b2"), "B"),
        record("m5", event_body("a3"), "A"),
    ]
    handler = ScriptedHandler(retry=frozenset({"a2"}))
    failed = await batch(handler).run(records)
    assert failed == ["m3", "m5"]
    # a3 was only ever handed over in one burst behind a2 (never before it), and is held.
    assert [b for b in handler.bursts if b[0].startswith("a")] == [["a1", "a2", "a3"]]
    assert [e for e in handler.seen if e.startswith("b")] == ["b1", "b2"]


async def test_invalid_and_dead_letter_go_to_the_dlq_and_count_as_done() -> None:
    sqs = FakeQueue(fifo=True)
    records = [
        record("m1", "not json", "A"),
        record("m2", event_body("x1"), "A"),
        record("m3", event_body("x2"), "A"),
    ]
    failed = await batch(ScriptedHandler(dead=frozenset({"x1"})), sqs).run(records)
    assert failed == []
    assert [m.body for m in sqs.sent] == ["not json", event_body("x1")]
    reasons = [m.attributes["userstore.reason"]["StringValue"] for m in sqs.sent]
    assert reasons[0].startswith("body is not valid JSON")
    assert sqs.sent[0].group == "A"
    assert sqs.sent[0].deduplication_id == "m1"


async def test_last_receive_dead_letters_and_failed_dlq_send_reports_failure() -> None:
    sqs = FakeQueue(fifo=True)
    done = await batch(ScriptedHandler(retry=frozenset({"r1"})), sqs).run(
        [record("m1", event_body("r1"), None, 5)]
    )
    assert done == []
    assert sqs.sent[0].attributes["userstore.reason"]["StringValue"] == (
        "gave up after 5 attempts: injected"
    )
    broken = await batch(ScriptedHandler(), FakeQueue(fifo=True, fail_sends=True)).run(
        [record("m2", "{}", "G")]
    )
    assert broken == ["m2"]  # not lost: SQS hands it out again


async def test_standard_queue_records_are_independent() -> None:
    records = [record(f"m{n}", event_body(f"e{n}", user=f"u{n % 2}"), None) for n in range(6)]
    sqs = FakeQueue()  # a standard dead-letter queue
    handler = ScriptedHandler(retry=frozenset({"e0", "e3"}), dead=frozenset({"e5"}))
    assert await batch(handler, sqs).run(records) == ["m0", "m3"]
    assert [m.body for m in sqs.sent] == [event_body("e5", user="u1")]
    assert sqs.sent[0].group is None
    assert sorted(handler.seen) == [f"e{n}" for n in range(6)]


class Slow(ScriptedHandler):
    async def handle_burst(
        self, events: Sequence[Event], hints: Any = None
    ) -> list[Outcome | Exception]:
        if any(event.event_id == "slow" for event in events):
            await asyncio.sleep(30)
        return await super().handle_burst(events, hints)


async def test_out_of_time_reports_the_unfinished_records_failed() -> None:
    records = [
        record("m1", event_body("a1"), "A"),
        record("m2", event_body("slow"), "B"),
        record("m3", event_body("b2"), "B"),
        record("m4", event_body("a2"), "A"),
    ]
    handler = Slow()
    assert await batch(handler).run(records, time_budget_s=0.5) == ["m2", "m3"]
    assert handler.seen == ["a1", "a2"]


def test_time_budget_leaves_a_margin_before_the_lambda_timeout() -> None:
    context = SimpleNamespace(get_remaining_time_in_millis=lambda: 60_000)
    assert _time_budget_s(context) == 57.0
    assert _time_budget_s(SimpleNamespace(get_remaining_time_in_millis=lambda: 1_000)) == 0.0
    assert _time_budget_s(None) is None


def test_stream_record_from_lambda_decodes_binary_values() -> None:
    blob = b"\x00\xffsig"
    raw = {
        "eventID": "1",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-2",
        "dynamodb": {
            "ApproximateCreationDateTime": 1764324000,
            "Keys": {"user_id": {"S": "u-1"}},
            "NewImage": {
                "user_id": {"S": "u-1"},
                "rev": {"N": "2"},
                "*amzn-ddb-map-sig*": {"B": base64.b64encode(blob).decode()},
                "nested": {"M": {"l": {"L": [{"B": base64.b64encode(b"x").decode()}]}}},
                "set": {"BS": [base64.b64encode(b"y").decode()]},
            },
            "SequenceNumber": "111",
            "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": "arn:aws:dynamodb:eu-west-2:123456789012:table/t/stream/2026",
    }
    converted = stream_record_from_lambda(raw)
    assert converted.event_name is EventName.MODIFY
    assert converted.sequence_number == "111"
    assert converted.new_image is not None and converted.old_image is None
    assert converted.new_image["*amzn-ddb-map-sig*"] == {"B": blob}
    assert converted.new_image["nested"] == {"M": {"l": {"L": [{"B": b"x"}]}}}
    assert converted.new_image["set"] == {"BS": [b"y"]}
    assert converted.approximate_created_at.year == 2025


@pytest.mark.parametrize("body", ["", "[]"])
async def test_empty_or_non_object_bodies_are_dead_lettered(body: str) -> None:
    sqs = FakeQueue(fifo=True)
    assert await batch(ScriptedHandler(), sqs).run([record("m1", body, "G")]) == []
    assert len(sqs.sent) == 1
    with pytest.raises(InvalidMessage):
        await MessageReader(opener=None, executor=None).read(body)


def test_sweep_input_defaults_and_refuses_unknown_fields() -> None:
    assert sweep_input(None) == sweep_input({}) == SweepInput()
    assert sweep_input({"verify": True, "segments": 2}) == SweepInput(segments=2, verify=True)
    with pytest.raises(InvalidSweepInput, match=r"^invalid sweep input: segment$"):
        sweep_input({"segment": 2})  # a typo is refused, not ignored
    with pytest.raises(InvalidSweepInput, match="rate"):
        sweep_input({"rate": 0})
    with pytest.raises(InvalidSweepInput):
        sweep_input(["not", "an", "object"])


@pytest.mark.parametrize(
    ("remaining_s", "rate", "segments", "expected"),
    [
        (None, 1.0, 4, 200),  # no budget: full pages
        (100.0, 100.0, 4, 200),  # plenty of time: full pages
        (2.0, 100.0, 4, 50),  # a segment's share of the rate for the time left
        (1.5, 60.0, 2, 45),
        (0.01, 10.0, 4, 1),  # at least one record, or the segment never moves
    ],
)
def test_scan_pages_shrink_to_the_time_left(
    remaining_s: float | None, rate: float, segments: int, expected: int
) -> None:
    assert page_limit(remaining_s, rate, segments) == expected
