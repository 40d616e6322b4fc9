"""Re-encryption of one record: whether it needs it (`Target.is_stale`), and doing it.

Used by the sweep, the replicas' stream reader and the Lambda stream handler. Decided on signed
bookkeeping only (`key_ref`, `email_idx`), without decrypting.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from . import profile
from .blind_index import IndexKeys
from .crypto import ItemCipher
from .errors import WriteConflict
from .keyref import KeyRef
from .ports import StoredRecord, UsersTable
from .record import RECORD_FORMAT, RecordHead, from_item, to_item


@dataclass(frozen=True)
class Target:
    """What a current record looks like: sealed under this key, email indexed with this version,
    in the current record format (so a sweep also upgrades older layouts)."""

    key_ref: KeyRef
    index_version: int

    def is_stale(self, head: RecordHead) -> bool:
        if head.key_ref != str(self.key_ref) or head.format != RECORD_FORMAT:
            return True
        return head.index_version is not None and head.index_version != self.index_version


class Resealed(StrEnum):
    RESEALED = "re-encrypted"
    CURRENT = "current"  # already under the target
    SKIPPED = "skipped"  # changed meanwhile, and the change brought it up to date
    MISSING = "missing"  # deleted meanwhile (tombstone expired)


class Resealer:
    """Re-encrypts one record without changing its content or losing a concurrent update."""

    def __init__(
        self, store: UsersTable, cipher: ItemCipher, index: IndexKeys, *, max_conflicts: int
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._index = index
        self._max_conflicts = max_conflicts

    async def reseal(
        self, user_id: str, target: Target, record: StoredRecord | None = None
    ) -> Resealed:
        """Raises RecordTampered for a record that fails verification: it is never rewritten."""
        current = record if record is not None else await self._store.get(user_id)
        for attempt in range(self._max_conflicts):
            if current is None:
                return Resealed.MISSING
            head = current.head
            if not target.is_stale(head):
                return Resealed.CURRENT if attempt == 0 else Resealed.SKIPPED
            state = from_item(await self._cipher.open(current.item))
            item = to_item(
                user_id,
                state,
                rev=head.rev + 1,
                recent_events=head.recent_events,
                expires_at=head.expires_at,
                email_index=self._index.token_for(profile.view(state)),
            )
            sealed = await self._cipher.seal(item)
            result = await self._store.put(sealed, expected_rev=head.rev)
            if result.written or (result.current is not None and result.current.item == sealed):
                return Resealed.RESEALED
            current = result.current  # a concurrent update won: re-decide on its record
        raise WriteConflict(f"re-encryption lost {self._max_conflicts} conditional writes in a row")
