"""Against a moto server process: visibility is extended while a message is being handled, an
unreachable KMS means "retry later" and never a half-written record, and every record names the
key (or material version) that sealed it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.harness.counting import event
from tests.harness.emulator import free_port
from tests.harness.settings import make_settings, provision_settings
from userstore.worker import profile
from userstore.worker.app import Components, components, consumer_for
from userstore.worker.crypto import ItemCipher, KmsKeys
from userstore.worker.errors import KeyUnavailable, RecordTampered, RetryLater
from userstore.worker.handlers import Hints, Outcome
from userstore.worker.metrics import Metrics
from userstore.worker.profile import Event, UserState
from userstore.worker.record import from_item, to_item
from userstore.worker.settings import KeyMode
from userstore.worker.sqs import SqsConsumer

NOW = datetime.now(UTC).replace(microsecond=0)
SECRET = "Quixote-Personal-77"


def uid() -> str:
    return f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:12]}"


def body(event_id: str, kind: str, user: str, data: Any = None) -> str:
    message: dict[str, Any] = {
        "event_id": event_id,
        "type": kind,
        "user_id": user,
        "occurred_at": NOW.isoformat(),
    }
    if data is not None:
        message["data"] = data
    return json.dumps(message)


async def send_all(sqs: Any, url: str, bodies: list[tuple[str, str]]) -> None:
    """(group, body) pairs to a FIFO queue, the way any publisher would send them."""
    entries = [
        {
            "Id": str(i),
            "MessageBody": text,
            "MessageGroupId": group,
            "MessageDeduplicationId": uuid.uuid4().hex,
        }
        for i, (group, text) in enumerate(bodies)
    ]
    response = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert not response.get("Failed")


async def queue_depth(sqs: Any, url: str) -> int:
    """Messages on the queue, visible or in flight."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    """Poll `condition` until it holds; fail (TimeoutError) after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


async def drain_queue(sqs: Any, url: str, timeout_s: float) -> None:
    async def drained() -> bool:
        return await queue_depth(sqs, url) == 0

    await eventually(drained, timeout_s)


async def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    response = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    messages: list[dict[str, Any]] = response.get("Messages", [])
    return messages


async def start(consumer: SqsConsumer) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(consumer.run(stop))


async def finish(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 30)


async def table_items(parts: Components) -> list[dict[str, Any]]:
    response = await parts.clients.dynamodb.scan(
        TableName=parts.settings.table, ConsistentRead=True
    )
    items: list[dict[str, Any]] = response["Items"]
    return sorted(items, key=lambda item: str(item["user_id"]["S"]))


# --- a. visibility is extended while a message is being handled ---------------------------------


class SlowOnce:
    """Wraps the real handler: one chosen event takes `delay_s` before it is handled."""

    def __init__(self, inner: Any, slow_event_id: str, delay_s: float) -> None:
        self.inner = inner
        self.slow_event_id = slow_event_id
        self.delay_s = delay_s
        self.calls: Counter[str] = Counter()

    async def prefetch(self, user_ids: Any) -> Hints:
        return await self.inner.prefetch(user_ids)  # type: ignore[no-any-return]

    async def handle(self, event: Event, hints: Hints | None = None) -> Outcome:
        self.calls[event.event_id] += 1
        if event.event_id == self.slow_event_id:
            await asyncio.sleep(self.delay_s)
        return await self.inner.handle(event, hints)  # type: ignore[no-any-return]


def count_sqs(client: Any) -> tuple[Counter[str], Counter[str]]:
    """Per event id, how often ReceiveMessage handed its message out; and SQS calls by name."""
    received: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    def after_receive(parsed: dict[str, Any], **_: Any) -> None:
        for message in parsed.get("Messages", []):
            received[json.loads(message["Body"])["event_id"]] += 1

    def before_call(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("after-call.sqs.ReceiveMessage", after_receive)
    client.meta.events.register("before-call.sqs.*", before_call)
    return received, calls


async def test_visibility_is_extended_while_a_slow_event_is_handled(moto_endpoint: str) -> None:
    # make_settings fixes visibility_timeout_s itself, hence the copy.
    settings = await provision_settings(
        make_settings(moto_endpoint).model_copy(update={"visibility_timeout_s": 2})
    )
    users = [uid() for _ in range(3)]
    events = [
        (user, body(f"v-{n}", "user.created", user, {"given_name": SECRET}))
        for n, user in enumerate(users)
    ]
    slow_s = 6.0  # three visibility timeouts
    metrics = Metrics()
    async with components(settings) as parts:
        consumer = await consumer_for(parts, metrics)
        slow = SlowOnce(parts.handler, "v-1", slow_s)
        consumer._handler = slow
        sqs = parts.clients.sqs
        received, calls = count_sqs(sqs)
        url = consumer._config.queue_url
        stop, task = await start(consumer)
        # Publish half a heartbeat period after the consumer started. The heartbeat wakes every
        # max(1, timeout/4) s and extends what has at most timeout/2 left: with a 2 s timeout
        # its first extension lands 0-1 s before the timeout runs out, depending on when the
        # message arrived within its 1 s period. Arriving mid-period keeps ~0.5 s to spare, so
        # the test exercises the heartbeat, not a race with it.
        await asyncio.sleep(0.5)
        await send_all(sqs, url, events)
        await drain_queue(sqs, url, timeout_s=30)
        await finish(stop, task)

        # Why this fails without the heartbeat: the slow message's 2 s visibility timeout would
        # run out twice or more while it is handled, and SQS would hand it out again each time
        # (without the heartbeat, received["v-1"] was 4 in this test). In this process the FIFO
        # group guard releases such copies untouched, so slow.calls alone might not show it,
        # but a copy could as well go to another replica and be handled twice at once; hence
        # the check on receives. With the heartbeat it stays invisible until it is deleted.
        assert received == {"v-0": 1, "v-1": 1, "v-2": 1}
        assert slow.calls == {"v-0": 1, "v-1": 1, "v-2": 1}
        # The heartbeat is what kept it invisible (the consumer changes visibility for nothing
        # else here: no failures, no busy groups).
        assert calls["ChangeMessageVisibilityBatch"] >= 2
        for user in users:
            record = await parts.store.get(user)
            assert record is not None and record.head.rev == 1
            view = profile.view(from_item(await parts.cipher.open(record.item)))
            assert view == {"given_name": SECRET}
        assert await receive_all(sqs, consumer._config.dlq_url) == []
    assert metrics.count("userstore_events", {"type": "user.created", "outcome": "applied"}) == 3


async def test_a_message_received_again_mid_handling_is_handled_once_and_frees_its_slot(
    moto_endpoint: str,
) -> None:
    """With the heartbeat off, the slow message's visibility lapses and SQS hands it out again."""
    settings = await provision_settings(
        make_settings(moto_endpoint).model_copy(update={"visibility_timeout_s": 1})
    )
    user = uid()
    async with components(settings) as parts:
        consumer = await consumer_for(parts, Metrics())
        slow = SlowOnce(parts.handler, "r-0", 3.5)
        consumer._handler = slow

        async def no_heartbeat() -> None:
            await asyncio.Event().wait()

        consumer._heartbeat = no_heartbeat  # type: ignore[method-assign]
        sqs = parts.clients.sqs
        received, _ = count_sqs(sqs)
        url = consumer._config.queue_url
        stop, task = await start(consumer)
        await send_all(sqs, url, [(user, body("r-0", "user.created", user, {"given_name": "A"}))])
        await drain_queue(sqs, url, timeout_s=30)
        await finish(stop, task)
        assert received["r-0"] >= 2  # the lapse really happened
        assert slow.calls == {"r-0": 1}  # the copy was not handled again
        assert consumer._capacity._value == settings.max_in_flight  # no permit leaked
        assert consumer._in_flight == {}


# --- b. KMS unavailable: retry later, never a half-written record -------------------------------


def unreachable_kms() -> Any:
    """A KMS client for a loopback port nobody listens on: every call is refused at once."""
    return boto3.session.Session(region_name="eu-west-2").client(
        "kms",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=1,
            read_timeout=1,
        ),
    )


async def test_kms_unavailable_is_retried_later_and_writes_nothing(moto_endpoint: str) -> None:
    settings = await provision_settings(make_settings(moto_endpoint))
    user = uid()
    kms = unreachable_kms()
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-broken-crypto")
    try:
        async with components(settings) as parts:
            active = parts.cipher.active
            broken = ItemCipher(KmsKeys(active, kms), settings.table, executor, active)

            # Directly: sealing needs a data key from KMS, which can't be reached.
            state = profile.apply(
                UserState(),
                event("k-0", "user.created", user, NOW.isoformat(), {"given_name": SECRET}),
            )
            remembered = (profile.Remembered(profile.id_tag("k-0")),)
            item = to_item(user, state, rev=1, recent_events=remembered, expires_at=None)
            with pytest.raises(KeyUnavailable) as caught:
                await broken.seal(item)
            assert isinstance(caught.value, RetryLater)
            assert "sealing" in caught.value.reason
            assert SECRET not in caught.value.reason and user not in caught.value.reason

            # Through the consumer: the create is left on the queue for later, nothing written.
            before = await table_items(parts)
            metrics = Metrics()
            consumer = await consumer_for(parts, metrics)
            # The real handler (same store, same limits) sealing with the broken cipher.
            handler = copy.copy(parts.handler)
            handler._cipher = broken
            consumer._handler = handler
            url, dlq_url = consumer._config.queue_url, consumer._config.dlq_url
            await send_all(
                parts.clients.sqs,
                url,
                [(user, body("k-1", "user.created", user, {"given_name": SECRET}))],
            )

            async def retried() -> bool:
                return metrics.count("userstore_message_retries", {"error": "KeyUnavailable"}) > 0

            stop, task = await start(consumer)
            try:
                await eventually(retried, 20)
            finally:
                await finish(stop, task)
            assert metrics.count("userstore_message_retries", {"error": "KeyUnavailable"}) >= 1
            assert metrics.count("userstore_dead_letters", {"error": "KeyUnavailable"}) == 0
            assert await receive_all(parts.clients.sqs, dlq_url) == []
            assert await queue_depth(parts.clients.sqs, url) == 1  # still there, backing off
            assert await parts.store.get(user) is None  # nothing half-written...
            assert await table_items(parts) == before  # ...and nothing else written either

            # KMS is back (the healthy components): the same message is applied after its
            # backoff (1-2 s on a first receive).
            healthy = Metrics()
            consumer = await consumer_for(parts, healthy)
            stop, task = await start(consumer)
            try:
                await drain_queue(parts.clients.sqs, url, timeout_s=20)
            finally:
                await finish(stop, task)
            assert (
                healthy.count("userstore_events", {"type": "user.created", "outcome": "applied"})
                == 1
            )
            assert await receive_all(parts.clients.sqs, dlq_url) == []
            record = await parts.store.get(user)
            assert record is not None and record.head.rev == 1
            assert [e.id_tag for e in record.head.recent_events] == [profile.id_tag("k-1")]
            view = profile.view(from_item(await parts.cipher.open(record.item)))
            assert view == {"given_name": SECRET}
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        kms.close()


# --- c. every record names the key that sealed it -----------------------------------------------


@pytest.mark.parametrize("mode", [KeyMode.KMS, KeyMode.CACHED], ids=["kms", "cached"])
async def test_key_ref_names_the_sealing_key(moto_endpoint: str, mode: KeyMode) -> None:
    settings = await provision_settings(make_settings(moto_endpoint, mode))
    users = [uid() for _ in range(2)]
    async with components(settings) as parts:
        for n, user in enumerate(users):
            created = event(
                f"r-{n}", "user.created", user, NOW.isoformat(), {"email_verified": True}
            )
            assert await parts.handler.handle(created) is Outcome.APPLIED
        if mode is KeyMode.KMS:
            # Resolved independently of the worker: the alias names this key right now.
            described = await parts.clients.kms.describe_key(KeyId=settings.kms_key)
            expected = "kms:" + described["KeyMetadata"]["Arn"]
            assert expected.startswith("kms:arn:aws:kms:eu-west-2:")
        else:
            expected = f"materials:{settings.material_name}#0"
        for user in users:
            record = await parts.store.get(user)
            assert record is not None
            assert record.head.key_ref == expected
            assert profile.view(from_item(await parts.cipher.open(record.item))) == {
                "email_verified": True
            }
            # key_ref is signed: pointing it elsewhere makes the record fail verification.
            parts.cipher.REFRESH_EVERY_S = 0.0  # an unknown key: re-read the controls each time
            forged = {**record.item, "key_ref": {"S": expected + "-other"}}
            with pytest.raises(RecordTampered):
                await parts.cipher.open(forged)
        if mode is KeyMode.CACHED:
            # Exactly one material version was made, and both records use it.
            meta = await parts.clients.dynamodb.scan(TableName=settings.meta_table)
            assert [(i["N"]["S"], i["V"]["N"]) for i in meta["Items"]] == [
                (settings.material_name, "0")
            ]
