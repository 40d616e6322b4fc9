"""Where a message's trace id comes from, and that the log context carries the three ids."""

from __future__ import annotations

import json

import structlog

from userstore.events import parse_event
from userstore.worker.tracing import TRACE_ATTRIBUTE, message_context, trace_id

BODY = {
    "event_id": "e-1",
    "type": "user.deleted",
    "user_id": "u-1",
    "occurred_at": "2026-01-01T00:00:00Z",
}
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def raw(**extra: object) -> dict[str, object]:
    return {"MessageId": "m-1", "Body": json.dumps(BODY), **extra}


def test_the_envelope_wins_then_the_attribute_then_xray() -> None:
    event = parse_event(json.dumps({**BODY, "trace_id": "pub-1"}))
    attrs = {"MessageAttributes": {TRACE_ATTRIBUTE: {"StringValue": "redriven-1"}}}
    header = {"Attributes": {"AWSTraceHeader": XRAY}}
    assert trace_id(raw(**attrs, **header), event) == "pub-1"
    plain = parse_event(json.dumps(BODY))
    assert trace_id(raw(**attrs, **header), plain) == "redriven-1"
    assert trace_id(raw(**header), plain) == "1-5759e988-bd862e3fe1be46a994272793"
    assert trace_id(raw(**header), None) == "1-5759e988-bd862e3fe1be46a994272793"


def test_without_one_it_is_derived_from_the_message_id_so_every_receive_agrees() -> None:
    first, again = trace_id(raw(), None), trace_id(raw(), None)
    assert first == again and len(first) == 32
    assert trace_id({**raw(), "MessageId": "m-2"}, None) != first


def test_a_malformed_attribute_or_header_is_not_used() -> None:
    bad = {"MessageAttributes": {TRACE_ATTRIBUTE: {"StringValue": "ada@example.org"}}}
    assert "@" not in trace_id(raw(**bad), None)
    assert trace_id(raw(Attributes={"AWSTraceHeader": "Root=ada lovelace"}), None) == trace_id(
        raw(), None
    )


def test_the_context_binds_and_unbinds() -> None:
    with message_context("m-1", "e-1", "t-1"):
        assert structlog.contextvars.get_contextvars() == {
            "message_id": "m-1",
            "event_id": "e-1",
            "trace_id": "t-1",
        }
        with message_context("m-2", None, "t-2"):
            assert structlog.contextvars.get_contextvars()["message_id"] == "m-2"
        assert structlog.contextvars.get_contextvars()["trace_id"] == "t-1"
    assert structlog.contextvars.get_contextvars() == {}
