"""Looking users up on the in-memory users table: by id (verified) and by email (blind index,
each candidate confirmed by decrypting it). No emulator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.keys import kms_ref, local_cipher
from tests.fakes.tables import MemoryUsersTable
from userstore.events import parse_event
from userstore.worker.blind_index import EmailIndex, IndexKeys
from userstore.worker.crypto import ItemCipher
from userstore.worker.errors import RecordTampered, UserNotFound
from userstore.worker.handlers import HandlerLimits, UserEventHandler
from userstore.worker.search import find_by_email, match_email, verified_profile

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@dataclass
class Parts:
    store: MemoryUsersTable
    cipher: ItemCipher
    index: IndexKeys


@pytest.fixture
async def parts() -> Parts:
    cipher, _ = local_cipher(kms_ref("k1"))
    made = Parts(MemoryUsersTable(), cipher, IndexKeys(EmailIndex({1: bytes(32)}, 1)))
    limits = HandlerLimits(timedelta(days=30), timedelta(minutes=5), 3)
    handler = UserEventHandler(made.store, made.cipher, made.index, limits, lambda: NOW)
    at = (NOW - timedelta(minutes=2)).isoformat()
    for n, (user, email) in enumerate(
        [("u-ada", "Ada@Example.org"), ("u-bob", "bob@example.org"), ("u-gone", "g@example.org")]
    ):
        body = {"event_id": f"c{n}", "type": "user.created", "user_id": user, "occurred_at": at}
        await handler.handle(parse_event(json.dumps({**body, "data": {"email": email}})))
    later = (NOW - timedelta(minutes=1)).isoformat()
    gone = {"event_id": "d", "type": "user.deleted", "user_id": "u-gone", "occurred_at": later}
    await handler.handle(parse_event(json.dumps(gone)))
    return made


async def test_a_profile_by_id_is_verified_and_decrypted(parts: Parts) -> None:
    assert await verified_profile(parts, "u-bob") == {"email": "bob@example.org"}
    with pytest.raises(UserNotFound):
        await verified_profile(parts, "u-nobody")
    with pytest.raises(UserNotFound):
        await verified_profile(parts, "u-gone")  # a tombstone is no user


async def test_find_by_email_normalizes_and_confirms(parts: Parts) -> None:
    assert await find_by_email(parts, "ada@example.ORG") == ["u-ada"]
    assert await find_by_email(parts, "nobody@example.org") == []
    assert await find_by_email(parts, "g@example.org") == []  # deleted: no current email


async def test_a_tampered_candidate_is_set_aside_not_matched(parts: Parts) -> None:
    item = parts.store.items["u-bob"]
    item["d"] = {"B": bytes(reversed(item["d"]["B"]))}  # the encrypted data
    matches = await match_email(parts, "bob@example.org")
    assert (matches.user_ids, matches.failed_verification) == ([], ["u-bob"])
    with pytest.raises(RecordTampered):
        await verified_profile(parts, "u-bob")
