"""A user store in memory for unit tests: the in-memory users table, the real ItemCipher over
local keys (counting the key material it asks for: one per seal, one per open) and the real
UserEventHandler on them. No AWS, no emulator."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tests.fakes.keys import LocalKeys, kms_ref
from tests.fakes.tables import MemoryUsersTable
from userstore.worker import profile
from userstore.worker.blind_index import EmailIndex, IndexKeys
from userstore.worker.crypto import ItemCipher
from userstore.worker.handlers import HandlerLimits, UserEventHandler
from userstore.worker.profile import UserState
from userstore.worker.record import RecordHead, from_item, read_head

LIMITS = HandlerLimits(
    tombstone_ttl=timedelta(days=30), max_clock_skew=timedelta(minutes=5), max_conflict_retries=3
)
# Every world shares the keys and one crypto thread (a hypothesis test makes many worlds).
KEYS = LocalKeys(kms_ref("k1"))
_EXECUTOR = ThreadPoolExecutor(max_workers=1)


class CountingKeys:
    """LocalKeys, counting the key material asked for: one per seal, one per open."""

    def __init__(self, keys: LocalKeys) -> None:
        self.keys = keys
        self.calls: Counter[str] = Counter()

    def encryption_materials(self, context: Any) -> Any:
        self.calls["seal"] += 1
        return self.keys.encryption_materials(context)

    def decrypting_provider(self, key_ref: Any) -> Any:
        self.calls["open"] += 1
        return self.keys.decrypting_provider(key_ref)

    def active_ref(self) -> Any:
        return self.keys.active_ref()

    def activate(self, key_ref: Any) -> None:
        self.keys.activate(key_ref)


@dataclass
class World:
    table: MemoryUsersTable
    cipher: ItemCipher
    keys: CountingKeys
    handler: UserEventHandler

    async def state(self, user: str) -> UserState | None:
        record = await self.table.get(user)
        return None if record is None else from_item(await self.cipher.open(record.item))

    async def view(self, user: str) -> Any:
        state = await self.state(user)
        return None if state is None else profile.view(state)

    def bookkeeping(self, user: str) -> RecordHead | None:
        """The record's signed-only attributes but its revision."""
        item = self.table.items.get(user)
        return None if item is None else replace(read_head(item), rev=0)

    def remembered(self, user: str) -> tuple[bytes, ...]:
        """The digests of the event ids the record remembers, oldest first (see `id_tags`)."""
        return tuple(entry.id_tag for entry in read_head(self.table.items[user]).recent_events)


def id_tags(*event_ids: str) -> tuple[bytes, ...]:
    """How a record remembers these event ids, to compare with `World.remembered`."""
    return tuple(profile.id_tag(event_id) for event_id in event_ids)


def memory_world(now: datetime, table: MemoryUsersTable | None = None) -> World:
    """A fresh store (or, with `table`, another writer on that one) whose clock says `now`."""
    keys = CountingKeys(KEYS)
    cipher = ItemCipher(keys, "users", _EXECUTOR, KEYS.active_ref())
    table = MemoryUsersTable() if table is None else table
    index = IndexKeys(EmailIndex({1: bytes(32)}, 1))
    return World(table, cipher, keys, UserEventHandler(table, cipher, index, LIMITS, lambda: now))
