"""The SQS consumer against a moto server process: settle every message exactly one way."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from typing import Any

import pytest

from tests.harness import forgery
from tests.harness.settings import make_settings, provision_settings
from tests.harness.sqs_queues import NOW, body, drain_queue, receive_all, send_all
from userstore.events import parse_event
from userstore.worker import profile
from userstore.worker.app import components, consumer_for
from userstore.worker.errors import AwsUnavailable
from userstore.worker.handlers import Hints, Outcome
from userstore.worker.metrics import Metrics
from userstore.worker.profile import Event
from userstore.worker.record import from_item
from userstore.worker.sqs import ERROR_ATTRIBUTE, EVENT_ID_ATTRIBUTE, REASON_ATTRIBUTE

SECRET = "Zebedee-Personal-42"


MALFORMED = [
    "not json at all " + SECRET,
    json.dumps(
        {"event_id": "m1", "type": "user.renamed", "user_id": "u", "occurred_at": NOW.isoformat()}
    ),
    json.dumps(
        {
            "event_id": "m2",
            "type": "user.created",
            "user_id": "u",
            "occurred_at": NOW.isoformat(),
            "data": {"email": SECRET},
        }
    ),
    json.dumps(
        {
            "event_id": "m3",
            "type": "user.created",
            "user_id": "u",
            "occurred_at": NOW.isoformat(),
            "data": {"nickname": SECRET},
        }
    ),
    json.dumps(
        {
            "event_id": "m4",
            "type": "user.created",
            "user_id": "u",
            "occurred_at": "yesterday",
            "data": {},
        }
    ),
]


@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "standard"])
async def test_valid_events_applied_and_malformed_dead_lettered(
    moto_endpoint: str, fifo: bool
) -> None:
    settings = await provision_settings(make_settings(moto_endpoint, fifo=fifo))
    users = [f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:8]}" for _ in range(5)]
    valid = []
    for n, user in enumerate(users):
        valid.append(
            (
                user,
                body(
                    f"c-{n}",
                    "user.created",
                    user,
                    0,
                    {"given_name": SECRET, "attributes": {"n": 0}},
                ),
            )
        )
        for k in range(1, 4):
            valid.append(
                (user, body(f"u-{n}-{k}", "user.updated", user, k, {"attributes": {"n": k}}))
            )
    bad = [("bad", text) for text in MALFORMED]
    metrics = Metrics()
    async with components(settings) as parts:
        consumer = await consumer_for(parts, metrics)
        sqs = parts.clients.sqs
        await send_all(sqs, consumer._config.queue_url, valid[:10] + bad + valid[10:])
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await drain_queue(sqs, consumer._config.queue_url)
        stop.set()
        await asyncio.wait_for(task, 30)
        dead = await receive_all(sqs, consumer._config.dlq_url)
        assert sorted(m["Body"] for m in dead) == sorted(MALFORMED)  # bodies untouched
        reasons = [m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in dead]
        assert all(reasons) and not any(SECRET in r for r in reasons)
        for user in users:
            record = await parts.store.get(user)
            assert record is not None
            view = profile.view(from_item(await parts.cipher.open(record.item)))
            assert view == {"given_name": SECRET, "attributes": {"n": 3}}  # the newest patch won
            if fifo:  # in order: 1 create + 3 updates, each a write
                assert record.head.rev == 4
    handled = sum(
        metrics.count("userstore_events", {"type": "user.updated", "outcome": o})
        for o in ("applied", "unchanged", "duplicate", "stale")
    )
    # Standard queues deliver at least once: a message may be handled twice (as a duplicate).
    assert handled == 15 if fifo else handled >= 15
    if fifo:
        assert (
            metrics.count("userstore_events", {"type": "user.updated", "outcome": "applied"}) == 15
        )
    assert metrics.count("userstore_dead_letters", {"error": "InvalidMessage"}) == len(MALFORMED)


class FlakyOnce:
    """Wraps the real handler; fails one chosen event once, records handling order per user."""

    def __init__(self, inner: Any, fail_event_id: str) -> None:
        self.inner = inner
        self.fail_event_id = fail_event_id
        self.failed = False
        self.order: dict[str, list[str]] = defaultdict(list)

    async def prefetch(self, user_ids: Any) -> Hints:
        return await self.inner.prefetch(user_ids)  # type: ignore[no-any-return]

    async def handle(self, event: Event, hints: Hints | None = None) -> Outcome:
        if event.event_id == self.fail_event_id and not self.failed:
            self.failed = True
            raise AwsUnavailable("injected failure")
        self.order[event.user_id].append(event.event_id)
        return await self.inner.handle(event, hints)  # type: ignore[no-any-return]


async def test_fifo_failure_releases_the_rest_of_the_group_in_order(moto_endpoint: str) -> None:
    settings = await provision_settings(make_settings(moto_endpoint, fifo=True))
    user = f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:8]}"
    events = [(user, body("e0", "user.created", user, 0, {}))] + [
        (user, body(f"e{k}", "user.updated", user, k, {"attributes": {"k": k}}))
        for k in range(1, 6)
    ]
    async with components(settings) as parts:
        consumer = await consumer_for(parts, Metrics())
        flaky = FlakyOnce(parts.handler, "e2")
        consumer._handler = flaky
        sqs = parts.clients.sqs
        await send_all(sqs, consumer._config.queue_url, events)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await drain_queue(sqs, consumer._config.queue_url)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert flaky.failed
        # e2 failed once: nothing after it ran before it, and everything ran exactly once.
        assert flaky.order[user] == ["e0", "e1", "e2", "e3", "e4", "e5"]
        record = await parts.store.get(user)
        assert record is not None and record.head.rev == 6


class BuggyOnce(FlakyOnce):
    """Fails one event once with an unexpected error whose message holds a personal value."""

    async def handle(self, event: Event, hints: Hints | None = None) -> Outcome:
        if event.event_id == self.fail_event_id and not self.failed:
            self.failed = True
            raise ValueError(f"bug while handling {SECRET}")
        return await self.inner.handle(event, hints)  # type: ignore[no-any-return]


async def test_an_unexpected_error_is_retried_and_logged_without_its_message(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = await provision_settings(make_settings(moto_endpoint, fifo=True))
    user = f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    async with components(settings) as parts:
        consumer = await consumer_for(parts, metrics)
        buggy = BuggyOnce(parts.handler, "b0")
        consumer._handler = buggy
        sqs = parts.clients.sqs
        await send_all(
            sqs, consumer._config.queue_url, [(user, body("b0", "user.created", user, 0, {}))]
        )
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await drain_queue(sqs, consumer._config.queue_url)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert buggy.failed
        assert await parts.store.get(user) is not None  # applied on the second attempt
    assert metrics.count("userstore_message_retries", {"error": "ValueError"}) == 1
    out = capsys.readouterr()
    assert "message.unexpected_error" in out.out + out.err
    assert SECRET not in out.out + out.err


async def test_a_forged_record_and_a_reused_event_id_are_dead_lettered_with_their_reasons(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A far-future reset_stamp would once have made the delete a silent 'stale' ack.

    Only a format-1 record (0.4's layout, still read) has a plaintext reset_stamp to forge
    (format 2 keeps stamps in the encrypted `d`), so the forged user's record is written as 0.4
    would have written it.
    """
    settings = await provision_settings(make_settings(moto_endpoint, fifo=True))
    forged, reused = (f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:8]}" for _ in range(2))
    metrics = Metrics()
    async with components(settings) as parts:
        old = parse_event(body("f-0", "user.created", forged, 0, {"given_name": SECRET}))
        sealed = await parts.cipher.seal(forgery.format1_item(forged, [old]))
        assert (await parts.store.put(sealed, expected_rev=None)).written
        created = parse_event(body("r-0", "user.created", reused, 0, {"given_name": SECRET}))
        assert await parts.handler.handle(created) is Outcome.APPLIED
        record = await parts.store.get(forged)
        assert record is not None and record.head.format == 1
        await parts.clients.dynamodb.put_item(
            TableName=settings.table,
            Item={**record.item, "reset_stamp": {"S": "2999-01-01T00:00:00.000000Z|x"}},
        )
        consumer = await consumer_for(parts, metrics)
        sqs = parts.clients.sqs
        sent = [
            (forged, body("f-1", "user.deleted", forged, 1)),
            (reused, body("r-0", "user.created", reused, 0, {"given_name": "Other" + SECRET})),
        ]
        await send_all(sqs, consumer._config.queue_url, sent)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await drain_queue(sqs, consumer._config.queue_url)
        stop.set()
        await asyncio.wait_for(task, 30)
        dead = await receive_all(sqs, consumer._config.dlq_url)
    attrs = {
        m["MessageAttributes"][EVENT_ID_ATTRIBUTE]["StringValue"]: m["MessageAttributes"]
        for m in dead
    }
    assert attrs.keys() == {"f-1", "r-0"}
    assert attrs["f-1"][ERROR_ATTRIBUTE]["StringValue"] == "RecordTampered"
    assert attrs["r-0"][ERROR_ATTRIBUTE]["StringValue"] == "EventIdReused"
    assert "r-0" in attrs["r-0"][REASON_ATTRIBUTE]["StringValue"]
    for a in attrs.values():
        assert not any(v in a[REASON_ATTRIBUTE]["StringValue"] for v in (SECRET, forged, reused))
    assert metrics.count("userstore_verification_failures") == 1
    assert metrics.count("userstore_dead_letters", {"error": "RecordTampered"}) == 1
    assert metrics.count("userstore_dead_letters", {"error": "EventIdReused"}) == 1
    assert metrics.count("userstore_events", {"type": "user.deleted", "outcome": "stale"}) == 0
    out = capsys.readouterr()
    assert "security.record_verification_failed" in out.out + out.err
    assert SECRET not in out.out + out.err
