"""Claims the docs make about stored records and their cost, held against the moto server.

Each test names the document and the sentence it holds. They use the real components
(`userstore.worker.app.components`), read stored items raw with a plain boto3 client, and count
AWS requests with the worker's own `Metrics`, so they do not depend on where the code lives.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from userstore.events import parse_event
from userstore.worker.app import Components, components
from userstore.worker.handlers import Outcome
from userstore.worker.metrics import Metrics
from userstore.worker.settings import KeyMode, Settings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
RECENT_EVENTS = 16  # docs/design.md: "an event whose id digest is remembered (the last 16 events
# applied)" (record format 1 remembered 50)


def at(seconds: int) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


def uid() -> str:
    return f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:12]}"


def event(event_id: str, kind: str, user: str, when: str, data: Any = None) -> Any:
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": kind,
        "user_id": user,
        "occurred_at": when,
    }
    if data is not None:
        body["data"] = data
    return parse_event(json.dumps(body))


def raw_item(settings: Settings, user: str) -> dict[str, Any]:
    """The stored item exactly as DynamoDB holds it (no decryption, no verification)."""
    client = boto3.client(
        "dynamodb", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region
    )
    item = client.get_item(
        TableName=settings.table, Key={"user_id": {"S": user}}, ConsistentRead=True
    ).get("Item")
    assert item is not None
    return dict(item)


def aws_requests(metrics: Metrics) -> dict[tuple[str, str], float]:
    """Requests sent so far, by (service, operation), as the worker's metrics count them."""
    return {
        (sample.labels["service"], sample.labels["operation"]): sample.value
        for family in metrics.registry.collect()
        if family.name == "userstore_aws_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def spent(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, int]:
    return {
        f"{service}.{operation}": int(count - before.get((service, operation), 0))
        for (service, operation), count in after.items()
        if count != before.get((service, operation), 0)
    }


# --- docs/threat-model.md: "per-field clocks ... encrypted `clock` attribute" --------------------
# (record format 2: the clock is in the encrypted `d`, with the claims; format 1 had `clock`)


async def test_the_clock_attribute_is_stored_as_ciphertext(provisioned_settings: Settings) -> None:
    custom = "shoe-size-zq"  # a custom attribute name: the clock would name it
    user = uid()
    async with components(provisioned_settings) as parts:
        created = event(
            "clock-c1",
            "user.created",
            user,
            at(0),
            {"given_name": "Ada", "attributes": {custom: 9}},
        )
        updated = event("clock-u1", "user.updated", user, at(1), {"family_name": None})
        assert await parts.handler.handle(created) is Outcome.APPLIED
        assert await parts.handler.handle(updated) is Outcome.APPLIED

    item = raw_item(provisioned_settings, user)
    assert "clock" not in item  # format 2: the clock is inside `d`
    clock = item["d"]
    assert set(clock) == {"B"}, "the clock must be stored as a binary (ciphertext), not a string"
    text = clock["B"].decode("latin-1")
    stamp_time = (NOW + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    for readable in (
        "given_name",
        "family_name",
        custom,
        "clock-c1",
        "clock-u1",
        stamp_time,
        "entries",
        "resets",
    ):
        assert readable not in text, "the stored clock reads in plaintext"
    assert len(clock["B"]) >= 16  # not an empty or truncated value


def test_the_declared_attribute_actions_encrypt_the_clock() -> None:
    from dynamodb_encryption_sdk.identifiers import CryptoAction

    from userstore.worker.crypto import ATTRIBUTE_ACTIONS

    assert ATTRIBUTE_ACTIONS.action("d") is CryptoAction.ENCRYPT_AND_SIGN  # format 2
    assert ATTRIBUTE_ACTIONS.action("clock") is CryptoAction.ENCRYPT_AND_SIGN  # format 1, read


# --- docs/design.md: "found `unchanged`, and not written" -----------------------------------------


def reading_cost(settings: Settings) -> dict[str, int]:
    """What reading one record costs: the GetItem, and opening it (docs/keys.md, the `unchanged`
    row: 1 Decrypt in `kms` mode, no KMS call in `cached` mode once its material version is
    held). Anything more (a PutItem, a GenerateDataKey) is a write the docs say is not made."""
    if settings.key_mode is KeyMode.KMS:
        return {"dynamodb.GetItem": 1, "kms.Decrypt": 1}
    return {"dynamodb.GetItem": 1}


async def _measured(parts: Components, metrics: Metrics, incoming: Any) -> dict[str, int]:
    before = aws_requests(metrics)
    assert await parts.handler.handle(incoming) is Outcome.UNCHANGED
    return spent(before, aws_requests(metrics))


async def test_an_update_that_changes_nothing_is_not_written(
    provisioned_settings: Settings,
) -> None:
    """An older write to a field a newer event already set merges to the same state: only the
    read is paid for (no PutItem, no GenerateDataKey, no Encrypt)."""
    metrics = Metrics()
    user = uid()
    async with components(provisioned_settings, metrics) as parts:
        await parts.handler.handle(event("c1", "user.created", user, at(0), {"given_name": "A"}))
        await parts.handler.handle(event("u2", "user.updated", user, at(2), {"given_name": "B"}))
        rev = raw_item(provisioned_settings, user)["rev"]
        older = event("u1", "user.updated", user, at(1), {"given_name": "C"})
        assert await _measured(parts, metrics, older) == reading_cost(provisioned_settings)
    assert raw_item(provisioned_settings, user)["rev"] == rev


async def test_a_duplicate_fallen_out_of_recent_events_is_unchanged_and_not_written(
    provisioned_settings: Settings,
) -> None:
    """docs/design.md: "If a duplicate has fallen out of the window, it is decrypted, merged,
    found `unchanged`, and not written." """
    metrics = Metrics()
    user = uid()
    async with components(provisioned_settings, metrics) as parts:
        await parts.handler.handle(event("c1", "user.created", user, at(0), {"given_name": "A"}))
        first = event("u0", "user.updated", user, at(1), {"family_name": "Byron"})
        assert await parts.handler.handle(first) is Outcome.APPLIED
        for i in range(RECENT_EVENTS + 1):
            later = event(f"u{i + 1}", "user.updated", user, at(2 + i), {"attributes": {"n": i}})
            assert await parts.handler.handle(later) is Outcome.APPLIED
        rev = raw_item(provisioned_settings, user)["rev"]
        assert await _measured(parts, metrics, first) == reading_cost(provisioned_settings)
    assert raw_item(provisioned_settings, user)["rev"] == rev


# --- worker/blind_index.py: "One spelling per address"; `userstore find --email` --------------

SPELLINGS = [
    # (stored, looked up): the same address as a user may type it
    ("Ada.Lovelace@Example.ORG", "ada.lovelace@example.org"),  # case
    ("\uff41\uff44\uff41.byron@example.org", "ada.byron@example.org"),  # fullwidth (NFKC)
    ("rene\u0301.x@example.org", "ren\u00e9.x@example.org"),  # decomposed / composed (NFKC)
]


async def test_find_by_email_matches_every_spelling_of_an_address(
    provisioned_settings: Settings,
) -> None:
    from userstore.worker.search import find_by_email

    async with components(provisioned_settings) as parts:
        stored_as: dict[str, str] = {}
        for n, (stored, _) in enumerate(SPELLINGS):
            user = uid()
            created = event(f"e{n}", "user.created", user, at(0), {"email": stored})
            assert await parts.handler.handle(created) is Outcome.APPLIED
            stored_as[stored] = user
        for stored, typed in SPELLINGS:
            # Both ways round: stored in one spelling, looked up in the other.
            assert await find_by_email(parts, typed) == [stored_as[stored]]
            assert await find_by_email(parts, stored) == [stored_as[stored]]
