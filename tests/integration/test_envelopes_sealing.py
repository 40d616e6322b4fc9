"""Wrapped and sealed events through the real worker against a moto server process.

SNS -> SQS (raw and non-raw subscriptions) and EventBridge -> SQS (a rule with an SQS target)
are moto's own deliveries, so the bodies are what those services write. Sealed payloads are made
by the real publisher with aws-encryption-sdk against moto's KMS; tampered ones are built from
them the way an attacker holding queue access could.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import boto3
from aiobotocore.session import get_session

from tests.harness.settings import make_settings, provision_settings
from tests.harness.sqs_queues import body, drain_queue, receive_all
from userstore.events import EventType, Publisher, SealedEvent, parse_event, sealing
from userstore.events.publisher import seal_body
from userstore.events.sealing import PayloadSealer
from userstore.worker import profile
from userstore.worker.app import components, consumer_for, payload_sealer
from userstore.worker.metrics import Metrics
from userstore.worker.record import from_item
from userstore.worker.settings import Settings
from userstore.worker.sqs import ERROR_ATTRIBUTE, EVENT_ID_ATTRIBUTE, REASON_ATTRIBUTE

SECRET = "Quentin-Private-77"


def user() -> str:
    return f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:8]}"


async def _settings(endpoint: str, fifo: bool = False) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return await provision_settings(
        make_settings(endpoint, fifo=fifo, payload_kms_key=f"alias/payload-{tag}")
    )


@asynccontextmanager
async def client(settings: Settings, service: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        service, region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url
    ) as made:
        yield made


async def run_until_drained(settings: Settings, metrics: Metrics) -> list[dict[str, Any]]:
    """Run the worker until its queue is empty; return the dead-lettered messages."""
    async with components(settings) as parts:
        consumer = await consumer_for(parts, metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await drain_queue(parts.clients.sqs, consumer._config.queue_url)
        stop.set()
        await asyncio.wait_for(task, 30)
        return await receive_all(parts.clients.sqs, consumer._config.dlq_url)


async def stored_view(settings: Settings, user_id: str) -> dict[str, Any] | None:
    async with components(settings) as parts:
        record = await parts.store.get(user_id)
        if record is None:
            return None
        return profile.view(from_item(await parts.cipher.open(record.item)))


async def test_sns_raw_and_notification_and_eventbridge_deliveries(moto_endpoint: str) -> None:
    settings = await _settings(moto_endpoint)
    raw_user, wrapped_user, bridged_user, bad_user = user(), user(), user(), user()
    async with client(settings, "sqs") as sqs, client(settings, "sns") as sns:
        queue_url = (await sqs.get_queue_url(QueueName=settings.queue))["QueueUrl"]
        queue_arn = (
            await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        )["Attributes"]["QueueArn"]
        raw_topic = (await sns.create_topic(Name=f"raw-{uuid.uuid4().hex[:8]}"))["TopicArn"]
        wrapped_topic = (await sns.create_topic(Name=f"wrapped-{uuid.uuid4().hex[:8]}"))["TopicArn"]
        await sns.subscribe(
            TopicArn=raw_topic,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        await sns.subscribe(TopicArn=wrapped_topic, Protocol="sqs", Endpoint=queue_arn)
        await sns.publish(
            TopicArn=raw_topic,
            Message=body("raw-1", "user.created", raw_user, 0, {"given_name": SECRET}),
            MessageAttributes={"publisher": {"DataType": "String", "StringValue": "accounts"}},
        )
        await sns.publish(
            TopicArn=wrapped_topic,
            Message=body("sns-1", "user.created", wrapped_user, 0, {"family_name": SECRET}),
        )
        await sns.publish(
            TopicArn=wrapped_topic,
            Message=body("sns-bad", "user.created", bad_user, 0, {"email": SECRET}),
        )
        async with client(settings, "events") as bridge:
            rule = f"users-{uuid.uuid4().hex[:8]}"
            await bridge.put_rule(
                Name=rule, EventPattern=json.dumps({"source": ["com.example.accounts"]})
            )
            await bridge.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
            detail = json.loads(
                body("eb-1", "user.created", bridged_user, 0, {"given_name": SECRET})
            )
            sent = await bridge.put_events(
                Entries=[
                    {
                        "Source": "com.example.accounts",
                        "DetailType": "user.created",
                        "Detail": json.dumps(detail),
                    },
                    {
                        "Source": "com.example.accounts",
                        "DetailType": "user.deleted",  # does not match detail.type
                        "Detail": json.dumps({**detail, "event_id": "eb-bad"}),
                    },
                ]
            )
            assert sent["FailedEntryCount"] == 0

    metrics = Metrics()
    dead = await run_until_drained(settings, metrics)
    assert await stored_view(settings, raw_user) == {"given_name": SECRET}
    assert await stored_view(settings, wrapped_user) == {"family_name": SECRET}
    assert await stored_view(settings, bridged_user) == {"given_name": SECRET}
    assert await stored_view(settings, bad_user) is None
    reasons = {
        m["MessageAttributes"][EVENT_ID_ATTRIBUTE]["StringValue"]: m["MessageAttributes"][
            REASON_ATTRIBUTE
        ]["StringValue"]
        for m in dead
    }
    assert reasons == {
        "sns-bad": "sns notification: Message: data.email: not a valid email address",
        "eb-bad": "eventbridge event: detail-type: does not match detail.type",
    }
    assert metrics.count("userstore_events", {"type": "user.created", "outcome": "applied"}) == 3


def seal_raw(
    sealer: PayloadSealer, event_id: str, user_id: str, data: Any, *, undated: bool = False
) -> SealedEvent:
    """What a publisher skipping validation would send: data sealed exactly as given.

    ``undated``: sealed under the 0.4 contract, with no occurred_at in the context.
    """
    envelope = json.loads(body(event_id, "user.created", user_id, 0))
    stub = SealedEvent.model_validate({**envelope, "sealed": "AAAA"})
    context = sealing.encryption_context(event_id, user_id, "user.created", stub.occurred_at)
    if undated:
        del context["occurred_at"]
    ciphertext, _ = sealing._CLIENT.encrypt(
        source=json.dumps(data).encode(),
        encryption_context=context,
        materials_manager=sealer._materials,
    )
    return stub.model_copy(update={"sealed": base64.b64encode(ciphertext).decode()})


def _reseal(envelope: SealedEvent, **change: Any) -> str:
    return seal_body(envelope.model_copy(update=change))


async def test_sealed_events_applied_tampered_ones_dead_lettered_without_plaintext(
    moto_endpoint: str,
) -> None:
    settings = await _settings(moto_endpoint, fifo=True)
    good, victim, other = user(), user(), user()
    sealer = await payload_sealer(settings)
    async with client(settings, "sqs") as sqs:
        queue_url = (await sqs.get_queue_url(QueueName=settings.queue))["QueueUrl"]
        published = await Publisher(sqs, queue_url, sealer=sealer).publish(
            [
                json.loads(body("s-1", "user.created", good, 0, {"email": "q@example.com"})),
                json.loads(body("s-2", "user.updated", good, 1, {"given_name": SECRET})),
            ]
        )
        assert published.sent == 2

        def seal(event_id: str, user_id: str, data: dict[str, Any]) -> SealedEvent:
            return sealer.seal(parse_event(body(event_id, "user.created", user_id, 0, data)))

        original = seal("t-1", victim, {"given_name": SECRET})
        # Sealed under a key the worker does not use (a publisher's mistake or a forgery).
        stranger_kms = boto3.client(
            "kms", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region
        )
        stranger_key = stranger_kms.create_key()["KeyMetadata"]["Arn"]
        foreign = PayloadSealer(stranger_kms, stranger_key).seal(
            parse_event(body("t-4", "user.created", victim, 0, {"given_name": SECRET}))
        )
        ciphertext = base64.b64decode(original.sealed)
        tampered = {
            # The sealed payload of t-1 moved into another event (another id, another user).
            "t-2": _reseal(original, event_id="t-2"),
            "t-3": _reseal(original, event_id="t-3", user_id=other),
            "t-4": seal_body(foreign),
            "t-5": _reseal(
                original,
                event_id="t-5",
                sealed=base64.b64encode(ciphertext[: len(ciphertext) - 40]).decode(),
            ),
            # Valid seal, invalid content: dead-lettered for the field, still sealed in the DLQ.
            "t-6": seal_body(seal_raw(sealer, "t-6", other, {"email": SECRET})),
        }
        # The genuine t-1 with its context swapped for another type (a create sold as update).
        tampered["t-7"] = _reseal(original, event_id="t-7", type=EventType.UPDATED)
        # The genuine t-1 re-dated, so that it would win over the victim's later changes.
        tampered["t-1"] = _reseal(original, occurred_at=original.occurred_at + timedelta(days=1))
        # Sealed under the 0.4 contract (a valid seal, but nothing binds its occurred_at).
        tampered["t-8"] = seal_body(
            seal_raw(sealer, "t-8", victim, {"given_name": SECRET}, undated=True)
        )
        for event_id, text in tampered.items():
            await sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=text,
                MessageGroupId=event_id,
                MessageDeduplicationId=event_id,
            )

    metrics = Metrics()
    dead = await run_until_drained(settings, metrics)
    assert await stored_view(settings, good) == {"email": "q@example.com", "given_name": SECRET}
    assert await stored_view(settings, victim) is None
    assert await stored_view(settings, other) is None

    by_id = {m["MessageAttributes"][EVENT_ID_ATTRIBUTE]["StringValue"]: m for m in dead}
    assert set(by_id) == set(tampered)
    reasons = {k: m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for k, m in by_id.items()}
    mismatch = (
        "sealed: encryption context does not match this event's event_id, user_id, type and"
        " occurred_at"
    )
    unopenable = "sealed: cannot be opened (not sealed for this worker's key, or altered)"
    assert reasons == {
        "t-1": mismatch,
        "t-2": mismatch,
        "t-3": mismatch,
        "t-4": unopenable,
        "t-5": unopenable,
        "t-6": "data.email: not a valid email address",
        "t-7": mismatch,
        "t-8": "sealed: encryption context has no occurred_at (the 0.4 contract):"
        " the publisher must seal and publish the event again with a current version",
    }
    for message in dead:
        assert (
            message["Body"]
            == tampered[message["MessageAttributes"][EVENT_ID_ATTRIBUTE]["StringValue"]]
        )
        assert SECRET not in message["Body"]  # the DLQ holds ciphertext only
        assert message["MessageAttributes"][ERROR_ATTRIBUTE]["StringValue"] == "InvalidMessage"


async def test_sealed_event_waits_for_its_key_then_dead_letters_with_why(
    moto_endpoint: str,
) -> None:
    """The worker's payload key is missing (think: KMS unreachable): retried, not invalid."""
    settings = await _settings(moto_endpoint, fifo=True)
    sealer = await payload_sealer(settings)
    worker_settings = settings.model_copy(
        update={"payload_kms_key": f"alias/absent-{uuid.uuid4().hex[:8]}", "max_receive_count": 2}
    )
    victim = user()
    async with client(settings, "sqs") as sqs:
        queue_url = (await sqs.get_queue_url(QueueName=settings.queue))["QueueUrl"]
        await Publisher(sqs, queue_url, sealer=sealer).publish(
            [json.loads(body("k-1", "user.created", victim, 0, {"given_name": SECRET}))]
        )
        # Keep the jittered backoff short: the second receive comes at once.
        await sqs.set_queue_attributes(
            QueueUrl=queue_url, Attributes={"RedrivePolicy": "", "VisibilityTimeout": "1"}
        )
    metrics = Metrics()
    dead = await run_until_drained(worker_settings, metrics)
    assert len(dead) == 1
    attributes = dead[0]["MessageAttributes"]
    assert attributes[REASON_ATTRIBUTE]["StringValue"] == (
        "gave up after 2 attempts: payload key not available (NotFoundException)"
    )
    assert attributes[ERROR_ATTRIBUTE]["StringValue"] == "PayloadKeyUnavailable"
    assert SECRET not in dead[0]["Body"]
    assert metrics.count("userstore_message_retries", {"error": "PayloadKeyUnavailable"}) == 1


class RecordingReader:
    """The worker's own reader, noting which event each read was for, in order."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads: list[str] = []

    async def read(self, text: str) -> Any:
        self.reads.append(json.loads(text)["event_id"])
        return await self.inner.read(text)


async def test_fifo_group_waits_behind_a_sealed_event_that_cannot_be_opened_yet(
    moto_endpoint: str,
) -> None:
    settings = await _settings(moto_endpoint, fifo=True)
    sealer = await payload_sealer(settings)
    worker_settings = settings.model_copy(
        update={"payload_kms_key": f"alias/absent-{uuid.uuid4().hex[:8]}", "max_receive_count": 2}
    )
    someone = user()
    async with client(settings, "sqs") as sqs:
        queue_url = (await sqs.get_queue_url(QueueName=settings.queue))["QueueUrl"]
        await sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"RedrivePolicy": ""})
        await Publisher(sqs, queue_url).publish(
            [json.loads(body("o-0", "user.created", someone, 0, {"given_name": "A"}))]
        )
        await Publisher(sqs, queue_url, sealer=sealer).publish(
            [json.loads(body("o-1", "user.updated", someone, 1, {"given_name": SECRET}))]
        )
        await Publisher(sqs, queue_url).publish(
            [json.loads(body("o-2", "user.updated", someone, 2, {"family_name": "C"}))]
        )
    metrics = Metrics()
    async with components(worker_settings) as parts:
        recorder = RecordingReader(parts.reader)
        parts.reader = recorder  # type: ignore[assignment]
        consumer = await consumer_for(parts, metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await drain_queue(parts.clients.sqs, consumer._config.queue_url)
        stop.set()
        await asyncio.wait_for(task, 30)
        dead = await receive_all(parts.clients.sqs, consumer._config.dlq_url)
    # o-2 is read only once o-1 has had its last attempt: never applied out of order.
    assert recorder.reads == ["o-0", "o-1", "o-1", "o-2"]
    assert [m["MessageAttributes"][EVENT_ID_ATTRIBUTE]["StringValue"] for m in dead] == ["o-1"]
    assert await stored_view(settings, someone) == {"given_name": "A", "family_name": "C"}
