"""Unwrapping SNS and EventBridge deliveries; sealed envelopes (shapes as in the AWS docs)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from userstore.events import (
    InvalidEvent,
    SealedEvent,
    UserCreated,
    Wrapper,
    parse_event,
    read_message,
)
from userstore.events.envelopes import open_sealed, sealed_plaintext

SECRET = "jane.secret@example.com"
EVENT: dict[str, Any] = {
    "type": "user.created",
    "event_id": "evt-1",
    "user_id": "u-1",
    "occurred_at": "2026-11-28T10:00:00Z",
    "data": {"email": SECRET, "given_name": "Jane"},
}


def sns_notification(message: str, **extra: Any) -> str:
    """SNS non-raw delivery to SQS: the JSON document SNS writes into the SQS body."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:eu-west-2:123456789012:user-events",
            "Message": message,
            "Timestamp": "2026-11-28T10:00:01.655Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7f",
            "SigningCertURL": "https://sns.eu-west-2.amazonaws.com/SimpleNotificationService-f3ec.pem",
            "UnsubscribeURL": "https://sns.eu-west-2.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {"source": {"Type": "String", "Value": "accounts"}},
            **extra,
        }
    )


def eventbridge_event(detail: Any, **extra: Any) -> str:
    """An EventBridge event as a rule's SQS target receives it."""
    return json.dumps(
        {
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "user.created",
            "source": "com.example.accounts",
            "account": "123456789012",
            "time": "2026-11-28T10:00:01Z",
            "region": "eu-west-2",
            "resources": [],
            "detail": detail,
            **extra,
        }
    )


def test_direct_event_and_sns_raw_delivery() -> None:
    # Raw delivery puts the published body itself on the queue.
    incoming = read_message(json.dumps(EVENT))
    assert incoming.wrapper is Wrapper.DIRECT
    assert incoming.event == parse_event(json.dumps(EVENT))


def test_sns_notification_is_unwrapped() -> None:
    incoming = read_message(sns_notification(json.dumps(EVENT)))
    assert incoming.wrapper is Wrapper.SNS
    assert incoming.event == parse_event(json.dumps(EVENT))


def test_eventbridge_event_is_unwrapped() -> None:
    incoming = read_message(eventbridge_event(EVENT))
    assert incoming.wrapper is Wrapper.EVENTBRIDGE
    assert isinstance(incoming.event, UserCreated)
    assert incoming.event.data.email == SECRET


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            sns_notification(json.dumps({**EVENT, "data": {"email": SECRET + "@"}})),
            "sns notification: Message: data.email: not a valid email address",
        ),
        (
            sns_notification(SECRET),
            "sns notification: Message is not valid JSON: expecting a value at line 1, column 1",
        ),
        (
            sns_notification(json.dumps(EVENT), Type="SubscriptionConfirmation"),
            "sns notification: Type: only Notification messages carry events",
        ),
        (
            sns_notification(json.dumps(EVENT), Message=7),
            "sns notification: Message: must be a string",
        ),
        (
            json.dumps({"Type": "Notification", "Message": json.dumps(EVENT)}),
            "sns notification: MessageId: field required",
        ),
        (
            eventbridge_event({**EVENT, "data": {"email": 5}}),
            "eventbridge event: detail: data.email: must be a string",
        ),
        (
            eventbridge_event(EVENT, **{"detail-type": "user.deleted"}),
            "eventbridge event: detail-type: does not match detail.type",
        ),
        (
            eventbridge_event(EVENT, **{"detail-type": SECRET}),
            "eventbridge event: detail-type: must be an event type "
            "(user.created, user.deleted, user.updated)",
        ),
        (
            eventbridge_event(EVENT, source="aws.events"),
            "eventbridge event: source: events of AWS services are not user events",
        ),
        (eventbridge_event(SECRET), "eventbridge event: detail: must be an object"),
        (
            eventbridge_event({**EVENT, SECRET: 1}),
            "eventbridge event: detail: [<name not shown>]: unknown field",
        ),
    ],
)
def test_wrapped_errors_name_wrapper_and_field_never_values(body: str, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        read_message(body)
    assert caught.value.reason == reason
    assert SECRET not in repr(caught.value)
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_inner_errors_keep_the_event_id() -> None:
    with pytest.raises(InvalidEvent) as caught:
        read_message(sns_notification(json.dumps({**EVENT, "data": {"email": 1}})))
    assert caught.value.event_id == "evt-1"
    assert caught.value.event_type == "user.created"


def test_wrapped_body_guards_apply_to_the_inner_message() -> None:
    with pytest.raises(InvalidEvent, match="duplicate key"):
        read_message(sns_notification('{"type":"user.deleted","type":"user.deleted"}'))
    with pytest.raises(InvalidEvent, match="nested too deeply"):
        read_message(sns_notification("[" * 40 + "]" * 40))


SEALED = {key: value for key, value in EVENT.items() if key != "data"} | {"sealed": "AAAA"}


def test_sealed_envelope_is_recognised_in_every_wrapper() -> None:
    for body in (
        json.dumps(SEALED),
        sns_notification(json.dumps(SEALED)),
        eventbridge_event(SEALED),
    ):
        assert isinstance(read_message(body).event, SealedEvent)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sealed": "not base64!"}, "sealed: must be standard base64 with padding"),
        ({"sealed": ""}, "sealed: string too short (min 4)"),
        ({"data": {}}, "data: unknown field"),
        ({"type": "user.moved"}, "type: unknown event type"),
    ],
)
def test_sealed_envelope_errors(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        read_message(json.dumps({**SEALED, **change}))
    assert caught.value.reason.startswith(reason)
    assert caught.value.event_id == "evt-1"


def test_open_sealed_validates_data_exactly_as_a_direct_event() -> None:
    event = parse_event(json.dumps(EVENT))
    envelope = SealedEvent.model_validate(SEALED)
    assert open_sealed(envelope, sealed_plaintext(event)) == event
    with pytest.raises(InvalidEvent) as caught:
        open_sealed(envelope, json.dumps({"email": SECRET + "@"}).encode())
    assert caught.value.reason == "data.email: not a valid email address"
    assert caught.value.event_id == "evt-1"
    with pytest.raises(InvalidEvent, match="sealed data is not valid JSON"):
        open_sealed(envelope, SECRET.encode())


def test_a_sealed_event_keeps_its_trace_id() -> None:
    event = parse_event(json.dumps({**EVENT, "trace_id": "1-5759e988-bd862e3fe1be46a994272793"}))
    envelope = SealedEvent.model_validate({**SEALED, "trace_id": event.trace_id})
    opened = open_sealed(envelope, sealed_plaintext(event))
    assert opened == event and opened.trace_id == event.trace_id


def test_sealed_plaintext_keeps_patch_nulls_and_deleted_null() -> None:
    updated = parse_event(json.dumps({**EVENT, "type": "user.updated", "data": {"email": None}}))
    assert sealed_plaintext(updated) == b'{"email":null}'
    deleted = parse_event(json.dumps({**EVENT, "type": "user.deleted", "data": None}))
    assert sealed_plaintext(deleted) == b"null"
    envelope = SealedEvent.model_validate({**SEALED, "type": "user.deleted"})
    assert open_sealed(envelope, b"null") == deleted
