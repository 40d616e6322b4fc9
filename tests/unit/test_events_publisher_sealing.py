"""Publisher with a sealer: bodies carry `sealed`, not `data`; sealing failures send nothing."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.harness.publisher_sqs import FakeSQS, created, publisher
from userstore.events import PublishError, SealedEvent, read_message
from userstore.events.models import Event
from userstore.events.sealing import SealingUnavailable, canonical_occurred_at, encryption_context
from userstore.worker.profile import stamp_of


class FakeSealer:
    """Stands in for PayloadSealer (KMS-backed, tested against moto elsewhere)."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.threads: set[str] = set()

    def seal(self, event: Event) -> SealedEvent:
        self.threads.add(threading.current_thread().name)
        if event.event_id in self.refuse:
            raise SealingUnavailable("key service refused (ThrottlingException)")
        fields = event.model_dump(mode="json", exclude={"data"}, exclude_none=True)
        return SealedEvent.model_validate({**fields, "sealed": "c2VhbGVk"})


async def test_sealed_bodies_replace_data_and_keep_fifo_fields() -> None:
    sqs, sealer = FakeSQS(), FakeSealer()
    result = await publisher(sqs, sealer=sealer).publish(
        [created(1, email="a@example.com"), created(2)]
    )
    assert result.sent == 2
    for n, entry in enumerate(sqs.sent, start=1):
        body: dict[str, Any] = json.loads(entry["MessageBody"])
        assert body["sealed"] == "c2VhbGVk" and "data" not in body
        assert body["type"] == "user.created" and body["schema_version"] == 1
        assert entry["MessageGroupId"] == f"user-{n % 3}"
        assert entry["MessageDeduplicationId"] == f"evt-{n}"
        assert isinstance(read_message(entry["MessageBody"]).event, SealedEvent)
    assert threading.current_thread().name not in sealer.threads  # off the event loop


async def test_a_sealing_failure_sends_nothing() -> None:
    sqs = FakeSQS()
    with pytest.raises(PublishError) as caught:
        await publisher(sqs, sealer=FakeSealer(refuse=frozenset({"evt-2"}))).publish(
            [created(1), created(2), created(3)]
        )
    assert caught.value.failed_event_ids == ("evt-2",)
    assert caught.value.codes == ("SealingUnavailable",)
    assert sqs.calls == []


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("2026-11-28T10:00:00Z", "2026-11-28T10:00:00.000000Z"),
        ("2026-11-28t10:00:00z", "2026-11-28T10:00:00.000000Z"),
        ("2026-11-28T11:00:00+01:00", "2026-11-28T10:00:00.000000Z"),
        ("2026-11-28T09:30:00.25-00:30", "2026-11-28T10:00:00.250000Z"),
        ("2026-11-28T10:00:00.000001Z", "2026-11-28T10:00:00.000001Z"),
        ("0005-01-01T00:00:00Z", "0005-01-01T00:00:00.000000Z"),  # fixed width
    ],
)
def test_one_canonical_occurred_at_per_instant(written: str, canonical: str) -> None:
    envelope = SealedEvent.model_validate(
        {"type": "user.deleted", "event_id": "e", "user_id": "u", "occurred_at": written,
         "sealed": "AAAA"}
    )  # fmt: skip
    assert canonical_occurred_at(envelope.occurred_at) == canonical
    context = encryption_context("e", "u", "user.deleted", envelope.occurred_at)
    assert context["occurred_at"] == canonical


def test_canonical_occurred_at_is_the_time_the_store_orders_by() -> None:
    when = datetime(2026, 11, 28, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert stamp_of(when, "e-1").partition("|")[0] == canonical_occurred_at(when)
