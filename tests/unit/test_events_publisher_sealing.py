"""Publisher with a sealer: bodies carry `sealed`, not `data`; sealing failures send nothing."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from events import PublishError, SealedEvent, read_message
from events.models import Event
from events.sealing import SealingUnavailable
from tests.unit.test_events_publisher import FakeSQS, created, publisher


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
