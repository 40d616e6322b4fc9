"""UserEventHandler, table-driven, on the in-memory users table and the real ItemCipher over
local keys: every decision of the write path with no emulator."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fakes.keys import LocalKeys, kms_ref, local_cipher
from tests.fakes.tables import MemoryUsersTable
from userstore.events import parse_event
from userstore.worker import profile
from userstore.worker.blind_index import EmailIndex, IndexKeys
from userstore.worker.crypto import ItemCipher
from userstore.worker.errors import (
    EventIdReused,
    KeyUnavailable,
    RecordTampered,
    UserstoreError,
    WriteConflict,
)
from userstore.worker.handlers import HandlerLimits, Outcome, UserEventHandler
from userstore.worker.record import from_item

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
USER = "u-1"
LIMITS = HandlerLimits(
    tombstone_ttl=timedelta(days=30), max_clock_skew=timedelta(minutes=5), max_conflict_retries=3
)


def event(event_id: str, kind: str, minutes: float, data: Any = None) -> Any:
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": kind,
        "user_id": USER,
        "occurred_at": (NOW - timedelta(hours=1) + timedelta(minutes=minutes)).isoformat(),
    }
    if data is not None:
        body["data"] = data
    return parse_event(json.dumps(body))


CREATED = event("e-create", "user.created", 0, {"email": "a@example.org", "given_name": "Ada"})
RENAMED = event("e-rename", "user.updated", 10, {"given_name": "Grace"})
DELETED = event("e-delete", "user.deleted", 20)


@dataclass
class World:
    table: MemoryUsersTable
    cipher: ItemCipher
    keys: LocalKeys
    handler: UserEventHandler

    async def view(self) -> dict[str, Any] | None:
        record = await self.table.get(USER)
        assert record is not None
        return profile.view(from_item(await self.cipher.open(record.item)))


@pytest.fixture
def world() -> World:
    key = kms_ref("k1")
    cipher, keys = local_cipher(key)
    index = IndexKeys(EmailIndex({1: bytes(32)}, 1))
    table = MemoryUsersTable()
    handler = UserEventHandler(table, cipher, index, LIMITS, clock=lambda: NOW)
    return World(table, cipher, keys, handler)


async def tamper(w: World) -> None:
    """Flip one byte of an encrypted attribute: the signature no longer matches."""
    item = w.table.items[USER]
    name = next(k for k, v in item.items() if "B" in v and not k.startswith("*"))
    blob = bytearray(item[name]["B"])
    blob[-1] ^= 1
    item[name] = {"B": bytes(blob)}


async def key_gone(w: World) -> None:
    w.keys.unavailable.add(w.cipher.active)


async def nothing(w: World) -> None:
    return None


@dataclass(frozen=True)
class Case:
    name: str
    before: tuple[Any, ...]  # applied first, each expected to apply
    event: Any
    expect: Outcome | type[UserstoreError]
    writes: int  # puts made by `event` alone
    view: dict[str, Any] | str | None = "any"  # the profile afterwards ("any": not checked)
    setup: Callable[[World], Awaitable[None]] = nothing


CASES = [
    Case(
        "create",
        (),
        CREATED,
        Outcome.APPLIED,
        1,
        {"email": "a@example.org", "given_name": "Ada"},
    ),
    Case(
        "update",
        (CREATED,),
        RENAMED,
        Outcome.APPLIED,
        1,
        {"email": "a@example.org", "given_name": "Grace"},
    ),
    Case("delete", (CREATED,), DELETED, Outcome.APPLIED, 1, None),
    Case("duplicate create", (CREATED,), CREATED, Outcome.DUPLICATE, 0),
    Case("duplicate update", (CREATED, RENAMED), RENAMED, Outcome.DUPLICATE, 0),
    Case(
        "stale: an update older than the delete",
        (CREATED, DELETED),
        event("e-late", "user.updated", 15, {"given_name": "Late"}),
        Outcome.STALE,
        0,
        None,
    ),
    Case(
        "unchanged: the same value again, under a new event id",
        (CREATED, RENAMED),
        event("e-same", "user.updated", 5, {"given_name": "Grace"}),
        Outcome.UNCHANGED,
        0,
    ),
    Case(
        "event id reused with other content",
        (CREATED, RENAMED),
        event("e-rename", "user.updated", 10, {"given_name": "Mallory"}),
        EventIdReused,
        0,
    ),
    Case("tampered record", (CREATED,), RENAMED, RecordTampered, 0, setup=tamper),
    Case("key unavailable", (CREATED,), RENAMED, KeyUnavailable, 0, setup=key_gone),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_handler_decides(world: World, case: Case) -> None:
    for earlier in case.before:
        assert await world.handler.handle(earlier) is Outcome.APPLIED
    await case.setup(world)
    puts = world.table.calls["put"]
    if isinstance(case.expect, Outcome):
        assert await world.handler.handle(case.event) is case.expect
    else:
        with pytest.raises(case.expect):
            await world.handler.handle(case.event)
    assert world.table.calls["put"] - puts == case.writes
    if case.view != "any":
        assert await world.view() == case.view


async def test_unchanged_and_duplicate_seal_nothing(world: World) -> None:
    """No write means no sealing either (no data key asked of KMS in `kms` mode)."""
    await world.handler.handle(CREATED)
    await world.handler.handle(RENAMED)
    seals = 0
    real = world.keys.encryption_materials

    def counting(context: Any) -> Any:
        nonlocal seals
        seals += 1
        return real(context)

    world.keys.encryption_materials = counting  # type: ignore[method-assign]
    puts = world.table.calls["put"]
    same = event("e-same", "user.updated", 5, {"given_name": "Grace"})
    assert await world.handler.handle(same) is Outcome.UNCHANGED
    assert await world.handler.handle(CREATED) is Outcome.DUPLICATE
    assert (seals, world.table.calls["put"] - puts) == (0, 0)


async def test_conflict_rereads_and_decides_again(world: World) -> None:
    """The conditional write loses to a concurrent writer: the handler merges onto its record."""
    await world.handler.handle(CREATED)
    other = UserEventHandler(
        world.table, world.cipher, IndexKeys(EmailIndex({1: bytes(32)}, 1)), LIMITS, lambda: NOW
    )
    concurrent = event("e-other", "user.updated", 12, {"family_name": "Hopper"})

    async def they_write_first(_: Any) -> None:
        assert await other.handle(concurrent) is Outcome.APPLIED

    world.table.before_put = they_write_first
    puts = world.table.calls["put"]
    assert await world.handler.handle(RENAMED) is Outcome.APPLIED
    assert world.table.calls["put"] - puts == 3  # ours lost, theirs, ours again
    assert world.table.rev(USER) == 3
    assert await world.view() == {
        "email": "a@example.org",
        "given_name": "Grace",
        "family_name": "Hopper",
    }


async def test_conflict_every_time_gives_up(world: World) -> None:
    await world.handler.handle(CREATED)
    writer = UserEventHandler(
        world.table, world.cipher, IndexKeys(EmailIndex({1: bytes(32)}, 1)), LIMITS, lambda: NOW
    )
    bump = 0

    async def someone_always_wins(_: Any) -> None:
        # The table disarmed this hook before calling it: the other writer's put goes through.
        nonlocal bump
        bump += 1
        other = event(f"e-w{bump}", "user.updated", 30 + bump, {"family_name": f"n{bump}"})
        assert await writer.handle(other) is Outcome.APPLIED
        world.table.before_put = someone_always_wins

    world.table.before_put = someone_always_wins
    with pytest.raises(WriteConflict):
        await world.handler.handle(RENAMED)
    assert bump == LIMITS.max_conflict_retries
