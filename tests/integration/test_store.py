"""The encrypted store and the event handler against a moto server process, both key modes."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import parse_event
from tests.integration.helpers import counted_components, event
from tests.model import expected_profiles
from tests.strategies import deliveries, event_sets
from worker import profile
from worker.errors import InvalidResult, RecordTampered
from worker.handlers import Outcome
from worker.record import from_item
from worker.settings import Settings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
PERSONAL = {
    "email": "ada.lovelace@example.org",
    "given_name": "Augusta",
    "family_name": "Lovelace",
    "phone_number": "+447700900461",
    "birthdate": "1815-12-10",
    "address": {
        "street_address": "12 St James Square",
        "locality": "Marylebone",
        "postal_code": "SW1Y 4JH",
    },
    "attributes": {"clearance": "top-secret-xyz", "tags": ["analytical-engine"]},
}
PERSONAL_VALUES = [
    "ada.lovelace@example.org",
    "Augusta",
    "Lovelace",
    "+447700900461",
    "1815-12-10",
    "12 St James Square",
    "Marylebone",
    "SW1Y 4JH",
    "top-secret-xyz",
    "analytical-engine",
]


def at(seconds: int) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


def uid() -> str:
    return f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:12]}"


def _raw_text(item: dict[str, Any]) -> str:
    """Every way a value could show in a raw item: JSON, and binaries decoded leniently."""
    parts = [json.dumps(item, default=lambda b: base64.b64encode(b).decode())]
    for value in item.values():
        if "B" in value:
            parts.append(value["B"].decode("latin-1"))
    return "\n".join(parts)


async def _view(parts: Any, user: str) -> Any:
    record = await parts.store.get(user)
    assert record is not None
    return profile.view(from_item(await parts.cipher.open(record.item)))


async def test_create_is_sealed_and_reads_back(provisioned_settings: Settings) -> None:
    async with counted_components(provisioned_settings) as (parts, _):
        user = uid()
        outcome = await parts.handler.handle(event("c1", "user.created", user, at(0), PERSONAL))
        assert outcome is Outcome.APPLIED
        record = await parts.store.get(user)
        assert record is not None
        raw = _raw_text(record.item)
        for value in PERSONAL_VALUES:
            assert value not in raw
        assert record.item["email"].keys() == {"B"}  # ciphertext, not a string
        assert record.head.key_ref.startswith(("kms:arn:aws:kms:", "materials:"))
        assert await _view(parts, user) == PERSONAL


async def test_duplicate_costs_no_kms_call_and_no_write(provisioned_settings: Settings) -> None:
    async with counted_components(provisioned_settings) as (parts, calls):
        user = uid()
        created = event("c1", "user.created", user, at(0), {"email": "a@example.org"})
        updated = event("u1", "user.updated", user, at(1), {"given_name": "Ada"})
        assert await parts.handler.handle(created) is Outcome.APPLIED
        assert await parts.handler.handle(updated) is Outcome.APPLIED
        before = dict(calls.counts)
        assert await parts.handler.handle(created) is Outcome.DUPLICATE
        assert await parts.handler.handle(updated) is Outcome.DUPLICATE
        spent = {k: v - before.get(k, 0) for k, v in calls.counts.items() if v != before.get(k, 0)}
        assert spent == {"GetItem": 2}


async def test_partial_update_merges_and_conflicts_are_retried(
    provisioned_settings: Settings,
) -> None:
    async with counted_components(provisioned_settings) as (parts, _):
        user = uid()
        await parts.handler.handle(event("c1", "user.created", user, at(0), PERSONAL))
        patches = [
            event(f"u{i}", "user.updated", user, at(i + 1), {"attributes": {f"k{i}": i}})
            for i in range(8)
        ]
        # Concurrent read-modify-writes on one record: the conditional write must lose none.
        outcomes = await asyncio.gather(*(parts.handler.handle(p) for p in patches))
        assert set(outcomes) == {Outcome.APPLIED}
        view = await _view(parts, user)
        assert view["attributes"] == {**PERSONAL["attributes"], **{f"k{i}": i for i in range(8)}}


async def test_delete_leaves_a_tombstone_without_personal_data(
    provisioned_settings: Settings,
) -> None:
    async with counted_components(provisioned_settings) as (parts, _):
        user = uid()
        await parts.handler.handle(event("c1", "user.created", user, at(0), PERSONAL))
        assert (
            await parts.handler.handle(event("d1", "user.deleted", user, at(1))) is Outcome.APPLIED
        )
        record = await parts.store.get(user)
        assert record is not None
        claims = set(record.item) - {
            "user_id",
            "rev",
            "presence",
            "presence_stamp",
            "reset_stamp",
            "recent_events",
            "key_ref",
            "expires_at",
            "format",
            "clock",
            "*amzn-ddb-map-desc*",
            "*amzn-ddb-map-sig*",
        }
        assert claims == set()
        assert int(record.item["expires_at"]["N"]) > NOW.timestamp()
        assert await _view(parts, user) is None
        # the older create, replayed, can't bring the user back
        assert await parts.handler.handle(event("c1", "user.created", user, at(0), PERSONAL)) in (
            Outcome.DUPLICATE,
            Outcome.STALE,
        )


async def test_tampered_record_is_refused_and_left_alone(provisioned_settings: Settings) -> None:
    async with counted_components(provisioned_settings) as (parts, _):
        user, victim = uid(), uid()
        await parts.handler.handle(event("c1", "user.created", user, at(0), PERSONAL))
        await parts.handler.handle(
            event("c2", "user.created", victim, at(0), {"email": "v@example.org"})
        )
        record = await parts.store.get(user)
        other = await parts.store.get(victim)
        assert record is not None and other is not None
        ddb = parts.clients.dynamodb
        table = provisioned_settings.table
        # 1: a signed-only attribute edited; 2: an encrypted attribute copied from another user
        forged = [
            {**record.item, "presence_stamp": {"S": "9999-01-01T00:00:00.000000Z|x"}},
            {**record.item, "email": other.item["email"]},
        ]
        for item in forged:
            await ddb.put_item(TableName=table, Item=item)
            with pytest.raises(RecordTampered):
                await parts.handler.handle(
                    event(
                        f"u-{uuid.uuid4().hex[:6]}",
                        "user.updated",
                        user,
                        at(5),
                        {"given_name": "X"},
                    )
                )
            stored = await parts.store.get(user)
            assert stored is not None and stored.item == item  # evidence left untouched


async def test_merged_profile_is_validated(provisioned_settings: Settings) -> None:
    async with counted_components(provisioned_settings) as (parts, _):
        user = uid()
        attrs = {f"a{i}": i for i in range(30)}
        await parts.handler.handle(event("c1", "user.created", user, at(0), {"attributes": attrs}))
        more = {f"b{i}": i for i in range(30)}
        with pytest.raises(InvalidResult) as raised:
            await parts.handler.handle(
                event("u1", "user.updated", user, at(1), {"attributes": more})
            )
        assert "attributes" in raised.value.reason


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_stored_state_is_independent_of_delivery_order(
    moto_endpoint: str, data: st.DataObject
) -> None:
    """Random permutations and duplications, through the real store and crypto (kms mode)."""
    from tests.conftest import make_settings
    from worker.app import aws_clients
    from worker.provision import provision

    events = data.draw(event_sets(max_events=10))
    tag = uuid.uuid4().hex[:8]
    for e in events:  # fresh users per example, inside the tombstone window
        e["user_id"] = f"{e['user_id']}-{tag}"
        e["occurred_at"] = (
            NOW + (datetime.fromisoformat(e["occurred_at"]) - datetime(2026, 11, 1, tzinfo=UTC))
        ).isoformat()
    delivered = data.draw(deliveries(events))
    settings_ = make_settings(moto_endpoint)
    async with aws_clients(settings_) as clients:
        await provision(settings_, clients.kms, clients.dynamodb, clients.sqs)
    async with counted_components(settings_) as (parts, _):
        for body in delivered:
            await parts.handler.handle(parse_event(json.dumps(body)))
        expected = expected_profiles(events)
        for user, profile_ in expected.items():
            record = await parts.store.get(user)
            got = (
                None
                if record is None
                else profile.view(from_item(await parts.cipher.open(record.item)))
            )
            assert got == profile_
