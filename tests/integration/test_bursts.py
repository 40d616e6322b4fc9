"""A user's burst on moto: 61 events for one user (a create and 60 updates, published at once,
FIFO group = user id) drained by the real consumer in a few writes, each sealed once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.harness.counting import counted_components
from tests.harness.model import expected_profiles
from tests.harness.settings import make_settings, provision_settings
from tests.harness.sqs_queues import drain_queue, send_all
from tests.harness.traffic import event_messages, make_events
from userstore.worker import profile
from userstore.worker.app import consumer_for
from userstore.worker.metrics import Metrics
from userstore.worker.record import from_item
from userstore.worker.settings import KeyMode

BURST = 61
MAX_WRITES = 8  # issue 12's target, in both key modes (and as many data keys in kms mode)


def handled(metrics: Metrics) -> float:
    return sum(
        metrics.count("userstore_events", {"type": kind, "outcome": outcome})
        for kind in ("user.created", "user.updated", "user.deleted")
        for outcome in ("applied", "unchanged", "duplicate", "stale")
    )


@pytest.mark.parametrize("key_mode", [KeyMode.CACHED, KeyMode.KMS], ids=str)
async def test_a_burst_of_one_user_is_applied_in_a_few_writes(
    moto_endpoint: str, key_mode: KeyMode
) -> None:
    settings = await provision_settings(make_settings(moto_endpoint, key_mode, fifo=True))
    events, _ = make_events(users=1, per_user=BURST, seed=12)
    [user] = {e["user_id"] for e in events}
    metrics = Metrics()
    async with counted_components(settings) as (parts, calls):
        consumer = await consumer_for(parts, metrics)
        sqs = parts.clients.sqs
        url = consumer._config.queue_url
        await send_all(sqs, url, [(group, text) for group, _, text in event_messages(events)])
        before = calls.counts.copy()
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(consumer.run(stop))
        async with asyncio.timeout(90):
            while handled(metrics) < BURST:  # noqa: ASYNC110 - metrics signal nothing
                await asyncio.sleep(0.01)
        drained_s = time.perf_counter() - started
        await drain_queue(sqs, url)
        stop.set()
        await asyncio.wait_for(task, 30)
        used = calls.counts - before
        record = await parts.store.get(user)
        assert record is not None
        stored: Any = profile.view(from_item(await parts.cipher.open(record.item)))
    print(
        f"\n{key_mode} mode: {BURST} events for one user drained in {drained_s:.2f} s, "
        f"{used['PutItem']} PutItem, {used['GenerateDataKey']} GenerateDataKey, "
        f"{used['Decrypt']} Decrypt"
    )
    assert stored == expected_profiles(events)[user]
    assert metrics.count("userstore_events", {"type": "user.updated", "outcome": "applied"}) == 60
    assert used["PutItem"] <= MAX_WRITES
    if key_mode is KeyMode.KMS:
        assert used["GenerateDataKey"] <= MAX_WRITES
