"""events.serialize and events.Publisher against a scripted fake SQS client."""

import hashlib
import json

import pytest
from botocore.exceptions import EndpointConnectionError

from tests.harness.publisher_sqs import (
    FIFO,
    STANDARD,
    WHEN,
    FakeSQS,
    client_error,
    created,
    fail,
    ok,
    publisher,
)
from userstore.events import (
    Event,
    InvalidEvent,
    ProfilePatch,
    Publisher,
    PublishError,
    PublishResult,
    UserDeleted,
    UserUpdated,
    parse_event,
    serialize,
)
from userstore.events.models import AddressPatch

# --- serialize ---------------------------------------------------------------

ROUND_TRIP: list[Event] = [
    created(1),
    created(2, email="A@Example.com", attributes={"n": 1, "f": 0.1, "b": True, "l": ["x"]}),
    UserUpdated(
        event_id="e u",
        user_id="u",
        occurred_at=WHEN,
        data=ProfilePatch(
            email=None,
            email_verified=None,
            address=AddressPatch(locality=None, country="GB"),
            attributes={"gone": None, "kept": "v"},
        ),
    ),
    UserUpdated(event_id="e", user_id="u", occurred_at=WHEN, data=ProfilePatch()),
    UserDeleted(event_id="e", user_id="u", occurred_at=WHEN),
    UserDeleted(event_id="e", user_id="u", occurred_at=WHEN, data=None),
    parse_event('{"type":"user.deleted","event_id":"e","user_id":"u",'
                '"occurred_at":"2026-11-28T11:00:00.5+01:00","data":{}}'),
]  # fmt: skip


@pytest.mark.parametrize("event", ROUND_TRIP)
def test_serialize_round_trip(event: Event) -> None:
    text = serialize(event)
    back = parse_event(text)
    assert back == event
    assert back.model_dump(mode="json", exclude_unset=True, exclude={"type", "schema_version"}) == (
        event.model_dump(mode="json", exclude_unset=True, exclude={"type", "schema_version"})
    )
    assert serialize(back) == text


def test_serialize_shape() -> None:
    event = ROUND_TRIP[2]
    payload = json.loads(serialize(event))
    assert list(payload)[:2] == ["type", "schema_version"]  # always written, even if defaulted
    assert payload == {
        "type": "user.updated",
        "schema_version": 1,
        "event_id": "e u",
        "user_id": "u",
        "occurred_at": "2026-11-28T10:00:00Z",
        "data": {
            "email": None,
            "email_verified": None,
            "address": {"locality": None, "country": "GB"},
            "attributes": {"gone": None, "kept": "v"},
        },
    }
    assert json.loads(serialize(created(1)))["data"] == {}


def test_serialize_escapes_sqs_forbidden_characters() -> None:
    event = created(1, given_name="a\ufffeb\uffff", family_name="Zoë 🙂")
    text = serialize(event)
    assert "\ufffe" not in text
    assert "\uffff" not in text
    assert "Zoë 🙂" in text  # other characters stay raw UTF-8 (smaller bodies)
    assert parse_event(text) == event


# --- publish -----------------------------------------------------------------


async def test_publish_fifo_batches_and_ids() -> None:
    client = FakeSQS()
    events = [created(i) for i in range(23)]
    spaced = UserDeleted(event_id="has space", user_id="user-x", occurred_at=WHEN)
    result = await publisher(client).publish([*events, spaced])
    assert [len(call) for call in client.calls] == [10, 10, 4]
    assert result == PublishResult(sent=24, message_ids=tuple(f"msg-{i}" for i in range(24)))
    for i, entry in enumerate(client.sent[:23]):
        assert entry["MessageGroupId"] == f"user-{i % 3}"
        assert entry["MessageDeduplicationId"] == f"evt-{i}"
        assert parse_event(entry["MessageBody"]) == events[i]
    last = client.sent[-1]
    assert last["MessageDeduplicationId"] == hashlib.sha256(b"has space").hexdigest()
    assert last["MessageGroupId"] == "user-x"


async def test_publish_standard_queue_has_no_fifo_fields() -> None:
    client = FakeSQS()
    await publisher(client, STANDARD).publish([created(1)])
    assert set(client.sent[0]) == {"Id", "MessageBody"}


async def test_publish_mappings_are_validated_like_parse_event() -> None:
    client = FakeSQS()
    mapping = {
        "type": "user.updated",
        "event_id": "evt-m",
        "user_id": "u",
        "occurred_at": "2026-11-28T10:00:00Z",
        "data": {"email": None},
    }
    await publisher(client).publish([mapping])
    assert json.loads(client.sent[0]["MessageBody"]) == {"schema_version": 1, **mapping}


async def test_invalid_event_names_index_and_sends_nothing() -> None:
    client = FakeSQS()
    bad = {
        "type": "user.created",
        "event_id": "evt-bad",
        "user_id": "u",
        "occurred_at": "2026-11-28T10:00:00Z",
        "data": {"email": "PII-not-an-email"},
    }
    with pytest.raises(InvalidEvent) as exc:
        await publisher(client).publish([created(0), bad, created(2)])
    assert exc.value.reason == "events[1]: data.email: not a valid email address"
    assert exc.value.event_id == "evt-bad"
    assert exc.value.event_type == "user.created"
    assert client.calls == []


async def test_invalid_object_type_rejected() -> None:
    with pytest.raises(InvalidEvent, match=r"^events\[0\]: must be an event model or a mapping$"):
        await publisher(FakeSQS()).publish(["not an event"])  # type: ignore[list-item]


async def test_tampered_model_is_caught_before_sending() -> None:
    # Models are frozen but their dicts are not; the publisher re-parses its own output.
    event = created(1, attributes={"a": 1})
    assert event.data.attributes is not None
    event.data.attributes["b"] = {"nested": "PII-value"}  # type: ignore[assignment]
    client = FakeSQS()
    with pytest.raises(InvalidEvent) as exc:
        await publisher(client).publish([event])
    assert exc.value.reason.startswith("events[0]: data.attributes.b:")
    assert "PII" not in exc.value.reason
    assert client.calls == []


async def test_batches_respect_payload_limit() -> None:
    big = {f"k{i:02d}": "x" * 1000 for i in range(16)}  # ~16 KB per body
    events = [created(i, attributes=big) for i in range(40)]
    client = FakeSQS()
    result = await publisher(client).publish(events)
    assert result.sent == 40
    for call in client.calls:
        assert len(call) <= 10
        assert sum(len(e["MessageBody"].encode()) for e in call) <= 256 * 1024
    assert [e["Id"] for e in client.sent] == [str(i) for i in range(40)]  # order kept


async def test_retries_failed_entries_that_are_not_sender_faults() -> None:
    client = FakeSQS(fail({"1", "3"}, sender_fault=False), fail({"3"}, sender_fault=False), ok)
    result = await publisher(client).publish([created(i) for i in range(5)])
    assert [[e["Id"] for e in call] for call in client.calls] == [
        ["0", "1", "2", "3", "4"],
        ["1", "3"],
        ["3"],
    ]
    assert result.sent == 5
    assert result.message_ids == tuple(f"msg-{i}" for i in range(5))


async def test_sender_fault_is_not_retried() -> None:
    client = FakeSQS(fail({"2"}, sender_fault=True, code="InvalidParameterValue"))
    with pytest.raises(PublishError) as exc:
        await publisher(client).publish([created(i, given_name="PII-name") for i in range(4)])
    assert len(client.calls) == 1
    assert exc.value.failed_event_ids == ("evt-2",)
    assert exc.value.codes == ("InvalidParameterValue",)
    assert exc.value.result.sent == 3
    assert "evt-2" in str(exc.value)
    assert "PII" not in str(exc.value)


async def test_gives_up_after_max_attempts() -> None:
    client = FakeSQS(*[fail({"0"}, sender_fault=False)] * 10)
    with pytest.raises(PublishError) as exc:
        await publisher(client, max_attempts=3).publish([created(0), created(1)])
    assert len(client.calls) == 3
    assert exc.value.failed_event_ids == ("evt-0",)
    assert exc.value.result == PublishResult(sent=1, message_ids=("msg-1",))


@pytest.mark.parametrize(
    "error",
    [
        client_error("ThrottlingException", 400),
        client_error("RequestThrottled", 403),
        client_error("InternalError", 500),
        client_error("Whatever", 503),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ],
)
async def test_transient_call_errors_are_retried(error: Exception) -> None:
    client = FakeSQS(error, error, ok)
    result = await publisher(client).publish([created(0)])
    assert result.sent == 1
    assert len(client.calls) == 3


async def test_permanent_call_error_is_not_retried() -> None:
    client = FakeSQS(client_error("AWS.SimpleQueueService.NonExistentQueue", 400))
    with pytest.raises(PublishError) as exc:
        await publisher(client).publish([created(i) for i in range(12)])
    # The first batch failed for good; the second was still attempted (and succeeded).
    assert [len(call) for call in client.calls] == [10, 2]
    assert exc.value.failed_event_ids == tuple(f"evt-{i}" for i in range(10))
    assert exc.value.codes == ("AWS.SimpleQueueService.NonExistentQueue",)
    assert exc.value.result.sent == 2


async def test_publish_error_message_is_bounded() -> None:
    client = FakeSQS(*[client_error("AccessDenied", 403)] * 5)
    with pytest.raises(PublishError) as exc:
        await publisher(client).publish([created(i) for i in range(50)])
    assert len(exc.value.failed_event_ids) == 50
    assert str(exc.value).endswith("and 30 more")


async def test_entries_missing_from_response_are_retried() -> None:
    client = FakeSQS(lambda entries: {"Successful": []}, ok)
    result = await publisher(client).publish([created(0)])
    assert result.sent == 1
    assert len(client.calls) == 2


async def test_empty_publish() -> None:
    client = FakeSQS()
    assert await publisher(client).publish([]) == PublishResult(sent=0)
    assert client.calls == []


def test_max_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        Publisher(FakeSQS(), FIFO, max_attempts=0)
