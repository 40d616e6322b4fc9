"""Tampering done directly in DynamoDB: every kind is refused, dead-lettered with its reason,
logged as a security event, counted, left as evidence, and reported by the sweep."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from tests.harness import forgery
from tests.harness.counting import event
from tests.harness.settings import make_settings, provision_settings
from tests.harness.sqs_queues import body, drain_queue, receive_all, send_all

# One clock for the records made here and the events `body` dates: two module-level clocks
# taken seconds apart at collection would make the "newer" update stale.
from tests.harness.traffic import NOW
from tests.reliability.scenario import ScenarioRecorder
from userstore.worker.app import Components, components, consumer_for
from userstore.worker.errors import RecordTampered
from userstore.worker.metrics import Metrics
from userstore.worker.profile import Presence, view
from userstore.worker.record import from_item
from userstore.worker.settings import KeyMode
from userstore.worker.sweep import run_sweep

SECRET = "Tamper-Personal-0x5eed"


def at(seconds: int) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


async def _create(parts: Components, user: str, given: str) -> dict[str, Any]:
    await parts.handler.handle(
        event(
            f"c-{user}",
            "user.created",
            user,
            at(0),
            {"given_name": given, "email": "t@example.org"},
        )
    )
    record = await parts.store.get(user)
    assert record is not None
    return record.item


@pytest.mark.parametrize("mode", [KeyMode.KMS, KeyMode.CACHED], ids=["kms", "cached"])
async def test_every_kind_of_tampering_is_refused_and_reported(
    moto_endpoint: str,
    mode: KeyMode,
    capsys: pytest.CaptureFixture[str],
    scenario: ScenarioRecorder,
) -> None:
    settings = await provision_settings(make_settings(moto_endpoint, mode))
    other_table = await provision_settings(make_settings(moto_endpoint, mode))
    metrics = Metrics()
    async with components(settings) as parts, components(other_table) as elsewhere:
        ids = {
            k: f"urn:fdc:gov.uk:2022:{k}-{uuid.uuid4().hex[:6]}"
            for k in (
                "edited",
                "attr_copied",
                "item_copied",
                "other_table",
                "key_ref",
                "donor",
                "fine",
            )
        }
        items = {k: await _create(parts, uid, SECRET) for k, uid in ids.items()}
        foreign = await _create(elsewhere, ids["other_table"], "Elsewhere")
        ddb, table = parts.clients.dynamodb, settings.table
        # Record format 2: a writer can edit the signed-only bookkeeping `h` (there is no
        # plaintext stamp to push into the future: stamps are inside `d`), and copy the
        # encrypted `d` (the clock and every claim) from another user.
        forged = {
            "edited": forgery.with_presence(items["edited"], Presence.DELETED),
            "attr_copied": forgery.with_data_of(items["attr_copied"], items["donor"]),
            "item_copied": {**items["donor"], "user_id": {"S": ids["item_copied"]}},
            "other_table": foreign,
            "key_ref": {**items["key_ref"], "key_ref": {"S": "kms:arn:aws:kms:eu-west-2:1:key/x"}},
        }
        for item in forged.values():
            await ddb.put_item(TableName=table, Item=item)
        scenario.describe(
            f"Tampering in DynamoDB ({mode} mode)",
            load="7 users, one event each",
            faults="signed-only h edited; encrypted d copied from another user; whole"
            " item copied to another user; item copied from another table; key_ref changed",
            checked="reads refuse each; events dead-lettered as RecordTampered; records left as"
            " evidence; security log line and metric per record; sweep --verify reports all",
        )

        # Reads refuse every one of them.
        for kind in forged:
            record = await parts.store.get(ids[kind])
            assert record is not None
            with pytest.raises(RecordTampered):
                from_item(await parts.cipher.open(record.item))

        # Events for those users are dead-lettered with the reason; the others go through.
        consumer = await consumer_for(parts, metrics)
        sqs, url = parts.clients.sqs, consumer._config.queue_url
        await send_all(
            sqs,
            url,
            [
                (ids[k], body(f"u-{k}", "user.updated", ids[k], 5, {"family_name": "X"}))
                for k in forged
            ]
            + [(ids["fine"], body("u-fine", "user.updated", ids["fine"], 5, {"family_name": "X"}))],
        )
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await drain_queue(sqs, url)
        stop.set()
        await asyncio.wait_for(task, 30)
        dead = await receive_all(sqs, consumer._config.dlq_url)
        assert sorted(
            m["MessageAttributes"]["userstore.event_id"]["StringValue"] for m in dead
        ) == sorted(f"u-{k}" for k in forged)
        assert {m["MessageAttributes"]["userstore.error"]["StringValue"] for m in dead} == {
            "RecordTampered"
        }
        fine = await parts.store.get(ids["fine"])
        assert fine is not None
        assert view(from_item(await parts.cipher.open(fine.item)))["family_name"] == "X"

        # Left as evidence.
        for kind, item in forged.items():
            stored = await parts.store.get(ids[kind])
            assert stored is not None
            assert stored.item == item

        # The sweep reports them and repairs nothing. A plain sweep opens only the records whose
        # key_ref is not the active key (the edited key_ref; in kms mode also the item from the
        # other table, sealed under that table's key); with verify it opens every record.
        report = await run_sweep(parts, segments=2, rate_per_s=1000)
        assert ids["key_ref"] in report.failed_user_ids
        assert set(report.failed_user_ids) <= {ids[k] for k in forged}
        verified = await run_sweep(parts, segments=2, rate_per_s=1000, verify=True)
        assert sorted(verified.failed_user_ids) == sorted(ids[k] for k in forged)
        assert verified.counts.failed == len(forged)
        for kind, item in forged.items():
            stored = await parts.store.get(ids[kind])
            assert stored is not None
            assert stored.item == item

    assert metrics.count("userstore_verification_failures") == len(forged)  # the consumer's
    out = capsys.readouterr()
    logged = out.out + out.err
    assert logged.count("security.record_verification_failed") >= len(forged)
    assert SECRET not in logged
    for message in dead:
        assert SECRET not in str(message["MessageAttributes"])
