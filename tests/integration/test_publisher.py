"""events.Publisher against a real moto server process (SQS on loopback)."""

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session

from userstore.events import (
    Event,
    Profile,
    ProfilePatch,
    Publisher,
    UserCreated,
    UserDeleted,
    UserUpdated,
    parse_event,
)

REGION = "us-east-1"


@pytest.fixture
async def sqs(moto_endpoint: str) -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        yield client


async def create_queue(sqs: Any, *, fifo: bool) -> str:
    name = f"events-{uuid.uuid4().hex[:12]}"
    if fifo:
        response = await sqs.create_queue(
            QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true"}
        )
    else:
        response = await sqs.create_queue(QueueName=name)
    return str(response["QueueUrl"])


async def receive_all(
    sqs: Any, queue_url: str, expected: int, *, within_s: float = 30
) -> list[dict[str, Any]]:
    """Receive (and delete) until `expected` messages arrived or `within_s` seconds passed."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + within_s
    while len(messages) < expected and time.monotonic() < deadline:
        response = await sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
        )
        batch = response.get("Messages", [])
        messages.extend(batch)
        if batch:
            # Deleting frees FIFO message groups for the next receive.
            await sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
                ],
            )
    return messages


def make_events() -> list[Event]:
    start = datetime(2026, 11, 28, 10, tzinfo=UTC)
    users = ["urn:fdc:gov.uk:2022:AbC-123", "user-2", "user-3", "user-4"]
    events: list[Event] = []
    for i in range(25):
        user = users[i % len(users)]
        when = start + timedelta(seconds=i)
        event_id = f"evt {i}" if i % 5 == 0 else f"evt-{i}"  # spaces need a hashed dedup id
        if i % 3 == 0:
            events.append(
                UserCreated(
                    event_id=event_id,
                    user_id=user,
                    occurred_at=when,
                    data=Profile(email=f"user{i}@example.com", attributes={"n": i, "tags": ["a"]}),
                )
            )
        elif i % 3 == 1:
            events.append(
                UserUpdated(
                    event_id=event_id,
                    user_id=user,
                    occurred_at=when,
                    data=ProfilePatch(email=None, given_name="Zoë", attributes={"n": None}),
                )
            )
        else:
            events.append(UserDeleted(event_id=event_id, user_id=user, occurred_at=when))
    return events


def expected_dedup_id(event_id: str) -> str:
    if " " in event_id:
        return hashlib.sha256(event_id.encode()).hexdigest()
    return event_id


async def test_publish_to_fifo_queue(sqs: Any) -> None:
    queue_url = await create_queue(sqs, fifo=True)
    events = make_events()
    result = await Publisher(sqs, queue_url).publish(events)
    assert result.sent == 25
    assert len(set(result.message_ids)) == 25

    messages = await receive_all(sqs, queue_url, 25)
    assert len(messages) == 25
    assert {m["MessageId"] for m in messages} == set(result.message_ids)

    by_id = {e.event_id: e for e in events}
    received_order: dict[str, list[str]] = {}
    for message in messages:
        event = parse_event(message["Body"])
        original = by_id[event.event_id]
        assert event == original
        attributes = message["Attributes"]
        assert attributes["MessageGroupId"] == original.user_id
        assert attributes["MessageDeduplicationId"] == expected_dedup_id(original.event_id)
        received_order.setdefault(event.user_id, []).append(event.event_id)
    # FIFO: per user, events arrive in the order they were published.
    for user, ids in received_order.items():
        assert ids == [e.event_id for e in events if e.user_id == user]


async def test_fifo_deduplicates_republished_events(sqs: Any) -> None:
    queue_url = await create_queue(sqs, fifo=True)
    events = make_events()[:5]
    publisher = Publisher(sqs, queue_url)
    await publisher.publish(events)
    await publisher.publish(events)  # a retry by the caller: same dedup ids
    messages = await receive_all(sqs, queue_url, 5)
    assert sorted(parse_event(m["Body"]).event_id for m in messages) == sorted(
        e.event_id for e in events
    )
    assert await receive_all(sqs, queue_url, 1, within_s=2) == []


async def test_publish_to_standard_queue(sqs: Any) -> None:
    queue_url = await create_queue(sqs, fifo=False)
    events = make_events()
    mappings = [{"type": "user.deleted", "event_id": "evt-map", "user_id": "u",
                 "occurred_at": "2026-11-28T10:00:00+01:00", "data": {}}]  # fmt: skip
    result = await Publisher(sqs, queue_url).publish([*events, *mappings])
    assert result.sent == 26

    messages = await receive_all(sqs, queue_url, 26)
    assert len(messages) == 26
    received = {parse_event(m["Body"]).event_id: parse_event(m["Body"]) for m in messages}
    for event in events:
        assert received[event.event_id] == event
    assert received["evt-map"].occurred_at == datetime(2026, 11, 28, 9, tzinfo=UTC)
    for message in messages:
        assert "MessageGroupId" not in message.get("Attributes", {})
