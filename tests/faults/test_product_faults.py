"""The worker's own components behind the fault proxy: what a fault does to them, in-process.

Each test here first found a product bug (the worker dying on a KMS outage at its first control
poll; an untranslated meta-store error in cached mode; a lost write answer counted as a
duplicate) and now guards its fix.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from tests.faults.proxy import (
    DROP_AFTER,
    DROP_BEFORE,
    KMS_DISABLED,
    FaultProxy,
    FaultRules,
    fault_proxy_process,
)
from tests.harness.counting import event
from tests.harness.settings import make_settings, provision_settings
from userstore.worker import profile
from userstore.worker.app import components
from userstore.worker.authority import current_target
from userstore.worker.errors import RetryLater
from userstore.worker.handlers import Outcome
from userstore.worker.metrics import Metrics
from userstore.worker.record import from_item
from userstore.worker.rotation_duties import RotationDuties
from userstore.worker.settings import KeyMode


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(moto_endpoint, FaultRules(seed=3))
    async with proxy:
        yield proxy


async def test_a_kms_outage_at_the_first_control_poll_does_not_stop_the_duties(
    proxy: FaultProxy,
) -> None:
    settings = await provision_settings(make_settings(proxy.url))
    async with components(settings) as parts:  # KMS healthy at start-up
        proxy.set_rules(FaultRules().with_outage("kms", KMS_DISABLED))
        stop = asyncio.Event()
        stop.set()  # no loop: only the first poll runs
        await RotationDuties(parts, Metrics(), stream_arn=None).run(stop)
    assert proxy.stats().injected("kms", KMS_DISABLED) >= 1


async def test_a_put_applied_but_unanswered_is_retried_safely(proxy: FaultProxy) -> None:
    """drop_after on the record's conditional PutItem: the write happened, the client saw a
    dropped connection, `call` retried, and the retry's condition failed on our own item."""
    settings = await provision_settings(make_settings(proxy.url))
    user = f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:12]}"
    at = datetime.now(UTC).replace(microsecond=0).isoformat()
    created = event("p-0", "user.created", user, at, {"given_name": "Lost-Answer"})
    async with components(settings) as parts:
        proxy.set_rules(
            FaultRules().with_outage(
                "dynamodb", DROP_AFTER, operations=frozenset({"PutItem"}), max_faults=1
            )
        )
        proxy.reset_stats()
        outcome = await parts.handler.handle(created)
        proxy.set_rules(None)
        record = await parts.store.get(user)
        assert record is not None
        assert record.head.rev == 1
        assert [e.id_tag for e in record.head.recent_events] == [profile.id_tag("p-0")]
        opened = profile.view(from_item(await parts.cipher.open(record.item)))
        assert opened == {"given_name": "Lost-Answer"}
    stats = proxy.stats()
    assert stats.injected("dynamodb", DROP_AFTER, "PutItem") == 1
    assert stats.forwarded("dynamodb", "PutItem") == 2  # the write, and the retry that lost
    # Applied exactly once, and reported so: the item the retry's condition failed on is the
    # very item the first attempt wrote.
    assert outcome is Outcome.APPLIED


async def test_cached_mode_meta_store_failure_at_a_control_poll_is_retry_later(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The meta store's boto3 resource has no Config: default (legacy) retries, ten attempts
    # with up to 25 s of backoff for DynamoDB. One attempt here keeps the test short.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    # A separate process: in cached mode `components()` builds the MetaStore on the event loop,
    # and its constructor calls DescribeTable synchronously (boto3), which would deadlock an
    # in-process proxy running on that same loop.
    with fault_proxy_process(moto_endpoint) as (url, control):
        settings = await provision_settings(make_settings(url, KeyMode.CACHED))
        async with components(settings) as parts:
            control.set_rules(
                FaultRules().with_outage("dynamodb", DROP_BEFORE, operations=frozenset({"Query"}))
            )
            with pytest.raises(RetryLater):
                await current_target(parts)
