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

from tests.harness import forgery
from tests.harness.counting import counted_components, event
from tests.harness.model import expected_profiles
from tests.harness.strategies import deliveries, event_sets
from userstore.events import parse_event
from userstore.worker import profile
from userstore.worker.errors import EventIdReused, InvalidResult, RecordTampered
from userstore.worker.handlers import Outcome
from userstore.worker.record import from_item, read_head
from userstore.worker.settings import Settings

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
        # format 2: every claim is inside one encrypted binary, none has an attribute of its own
        assert record.item["d"].keys() == {"B"}  # ciphertext, not a string
        assert "email" not in record.item
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
        assert set(record.item) == {
            "user_id",
            "rev",
            "h",  # presence and remembered event digests
            "d",  # the clock and the claims, encrypted
            "key_ref",
            "expires_at",
            "format",
            "*amzn-ddb-map-desc*",
            "*amzn-ddb-map-sig*",
        }
        # and `d`, decrypted, holds no claim: every entry was pruned by the delete's reset
        state = from_item(await parts.cipher.open(record.item))
        assert state.entries == {} and state.presence is profile.Presence.DELETED
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
        # 1: the signed-only bookkeeping `h` edited (format 2 has no plaintext stamp to push
        # into the future; flipping presence to deleted would hide the user); 2: the encrypted
        # `d` (clock and claims) copied from another user
        forged = [
            forgery.with_presence(record.item, profile.Presence.DELETED),
            forgery.with_data_of(record.item, other.item),
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


def _spent(calls: Any, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in calls.counts.items() if v != before.get(k, 0)}


def _kms(spent: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in spent.items() if k in {"Decrypt", "GenerateDataKey", "Encrypt"}}


@pytest.mark.parametrize("kind", ["user.updated", "user.deleted"])
@pytest.mark.parametrize("forged", ["year 2999", "just after the event"])
async def test_a_forged_reset_stamp_is_tampering_not_stale(
    provisioned_settings: Settings, kind: str, forged: str
) -> None:
    """A table writer raises reset_stamp so that later events would be skipped as stale.

    Only format 1 (0.4's records, still read) had a plaintext reset_stamp; format 2 keeps every
    stamp in the encrypted `d` (its tampering: test_tampered_record_is_refused_and_left_alone).
    """
    async with counted_components(provisioned_settings) as (parts, calls):
        user = uid()
        created = event("c1", "user.created", user, at(0), PERSONAL)
        written = await parts.cipher.seal(forgery.format1_item(user, [created]))
        assert (await parts.store.put(written, expected_rev=None)).written
        record = await parts.store.get(user)
        assert record is not None and record.head.format == 1
        stamp = (
            "2999-01-01T00:00:00.000000Z|x"
            if forged == "year 2999"
            else profile.stamp_of(NOW + timedelta(seconds=2), "zz")  # within the clock skew
        )
        item = {**record.item, "reset_stamp": {"S": stamp}}
        await parts.clients.dynamodb.put_item(TableName=provisioned_settings.table, Item=item)
        later = event(
            "e2", kind, user, at(1), {"given_name": "X"} if kind == "user.updated" else None
        )
        before = dict(calls.counts)
        with pytest.raises(RecordTampered) as raised:
            await parts.handler.handle(later)
        assert stamp not in raised.value.reason and user not in raised.value.reason
        assert "PutItem" not in _spent(calls, before)
        stored = await parts.store.get(user)
        assert stored is not None and stored.item == item  # evidence left untouched


async def test_a_genuinely_stale_event_is_verified_then_skipped(
    provisioned_settings: Settings,
) -> None:
    async with counted_components(provisioned_settings) as (parts, calls):
        user = uid()
        await parts.handler.handle(event("c1", "user.created", user, at(5), PERSONAL))
        before = dict(calls.counts)
        older = event("u1", "user.updated", user, at(1), {"given_name": "Old"})
        assert await parts.handler.handle(older) is Outcome.STALE
        spent = _spent(calls, before)
        assert "PutItem" not in spent
        kms = provisioned_settings.key_mode == "kms"
        assert _kms(spent) == ({"Decrypt": 1} if kms else {})  # the verification
        assert await parts.handler.handle(event("d0", "user.deleted", user, at(2))) is Outcome.STALE


@pytest.mark.parametrize(
    ("layout", "kind", "entry"),
    [
        (2, "user.deleted", None),  # a digest-less id, as entries from older records are
        (2, "user.updated", None),
        (2, "user.updated", b"\x00\x00\x00\x01"),  # a digest the writer can't compute
        (2, "user.deleted", b"\x00\x00\x00\x01"),
        (1, "user.updated", "{id}"),  # format 1: recent_events in plaintext
        (1, "user.updated", "{id}\t1:AAAAAAAAAAA"),
        (1, "user.deleted", "{id}\t1:AAAAAAAAAAA"),
    ],
)
async def test_a_forged_remembered_event_is_tampering_not_a_skip(
    provisioned_settings: Settings, layout: int, kind: str, entry: bytes | str | None
) -> None:
    """A table writer adds an upcoming event's id to the remembered events (format 2: in `h`;
    format 1: recent_events) so that it would be skipped."""
    async with counted_components(provisioned_settings) as (parts, _):
        user = uid()
        created = event("c1", "user.created", user, at(0), PERSONAL)
        if layout == 1:
            written = await parts.cipher.seal(forgery.format1_item(user, [created]))
            assert (await parts.store.put(written, expected_rev=None)).written
        else:
            await parts.handler.handle(created)
        record = await parts.store.get(user)
        assert record is not None and record.head.format == layout
        if isinstance(entry, str):
            remembered = record.item["recent_events"]["L"] + [{"S": entry.format(id="next")}]
            item = {**record.item, "recent_events": {"L": remembered}}
        else:
            item = forgery.with_remembered(record.item, "next", entry)
        assert read_head(item).remembers("next")
        await parts.clients.dynamodb.put_item(TableName=provisioned_settings.table, Item=item)
        data = {"given_name": "X"} if kind == "user.updated" else None
        with pytest.raises(RecordTampered):
            await parts.handler.handle(event("next", kind, user, at(1), data))
        stored = await parts.store.get(user)
        assert stored is not None and stored.item == item


async def test_a_redelivered_delete_is_verified_then_a_duplicate(
    provisioned_settings: Settings,
) -> None:
    async with counted_components(provisioned_settings) as (parts, calls):
        user = uid()
        await parts.handler.handle(event("c1", "user.created", user, at(0), PERSONAL))
        deleted = event("d1", "user.deleted", user, at(1))
        assert await parts.handler.handle(deleted) is Outcome.APPLIED
        before = dict(calls.counts)
        assert await parts.handler.handle(deleted) is Outcome.DUPLICATE
        kms = provisioned_settings.key_mode == "kms"
        assert _kms(_spent(calls, before)) == ({"Decrypt": 1} if kms else {})


async def test_an_event_id_reused_with_other_content_is_dead_lettered(
    provisioned_settings: Settings,
) -> None:
    async with counted_components(provisioned_settings) as (parts, _):
        user = uid()
        await parts.handler.handle(event("c1", "user.created", user, at(0), PERSONAL))
        first = event("u1", "user.updated", user, at(1), {"given_name": "Ada"})
        assert await parts.handler.handle(first) is Outcome.APPLIED
        record = await parts.store.get(user)
        assert await parts.handler.handle(first) is Outcome.DUPLICATE  # same id, same content
        for reused in [
            event("u1", "user.updated", user, at(1), {"given_name": "Zebedee"}),
            event("u1", "user.updated", user, at(2), {"given_name": "Ada"}),
            event("u1", "user.deleted", user, at(1)),
        ]:
            with pytest.raises(EventIdReused) as raised:
                await parts.handler.handle(reused)
            assert "u1" in raised.value.reason
            assert not any(v in raised.value.reason for v in ("Zebedee", "Ada", user))
        assert await parts.store.get(user) == record  # nothing written


async def test_ids_remembered_without_a_digest_are_still_duplicates(
    provisioned_settings: Settings,
) -> None:
    """Records written before digests (format 1, bare ids): a redelivery is verified, then
    skipped."""
    async with counted_components(provisioned_settings) as (parts, calls):
        user = uid()
        created = event("c1", "user.created", user, at(0), PERSONAL)
        item = forgery.format1_item(user, [created], recent_events=("c1",))
        assert (await parts.store.put(await parts.cipher.seal(item), expected_rev=None)).written
        before = dict(calls.counts)
        assert await parts.handler.handle(created) is Outcome.DUPLICATE
        spent = _spent(calls, before)
        assert "PutItem" not in spent
        kms = provisioned_settings.key_mode == "kms"
        assert _kms(spent) == ({"Decrypt": 1} if kms else {})
        # the next event upgrades the record to format 2 and remembers its id with a digest,
        # beside the digest-less one
        patch = event("u1", "user.updated", user, at(1), {"given_name": "Ada"})
        assert await parts.handler.handle(patch) is Outcome.APPLIED
        record = await parts.store.get(user)
        assert record is not None and record.head.format == 2
        recent = record.head.recent_events
        assert [e.id_tag for e in recent] == [profile.id_tag("c1"), profile.id_tag("u1")]
        assert recent[0].content is None and recent[1].content is not None


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
    from tests.harness.settings import make_settings
    from userstore.worker.app import aws_clients
    from userstore.worker.provision import provision

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
