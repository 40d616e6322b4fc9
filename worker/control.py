"""Control records: the table's own signed configuration (active key, blind-index keys).

They live in the users table under ids holding a space, which no user id can contain, so they
are sealed and signed like user records (a table writer alone can't forge one) and their
changes flow through the table's stream to every replica.

A table writer *can* put back an older, validly signed revision (a replay). So a process never
goes back: it remembers the newest revision of each control record it has verified, and refuses
an older one (ControlRolledBack, a security event); a replica that notices restores the newer
body it remembers (see worker.rotation.follow_control).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .crypto import ItemCipher
from .errors import ControlRolledBack, NotProvisioned, RecordTampered, WriteConflict
from .keyref import InvalidKeyRef, KeyRef
from .record import KEY_REF, PARTITION_KEY, Item
from .store import RecordStore

CONTROL_PREFIX = "userstore control/"
ACTIVE_KEY = CONTROL_PREFIX + "active-key"
INDEX_KEYS = CONTROL_PREFIX + "index-keys"
CONTROL_IDS = (ACTIVE_KEY, INDEX_KEYS)
_BODY = "control"
_RETRIES = 5

Body = dict[str, Any]


def is_control(user_id: str) -> bool:
    return user_id.startswith(CONTROL_PREFIX)


@dataclass(frozen=True)
class Control:
    control_id: str
    rev: int
    body: Body
    key_ref: KeyRef


def _position(control: Control) -> tuple[int, int]:
    """How far a control record has moved: (index key version, revision) only ever grow."""
    active_version = int(control.body.get("active", 0)) if control.control_id == INDEX_KEYS else 0
    return active_version, control.rev


class ControlRecords:
    """Reads (verified, never going back) and writes the control records."""

    def __init__(self, store: RecordStore, cipher: ItemCipher) -> None:
        self._store = store
        self._cipher = cipher
        self._newest: dict[str, Control] = {}

    def newest_seen(self, control_id: str) -> Control | None:
        return self._newest.get(control_id)

    async def read(self, control_id: str) -> Control | None:
        """The verified control record, or None if there is none yet.

        Raises ControlRolledBack if it is older than one this process has already verified.
        """
        record = await self._store.get(control_id)
        seen = self._newest.get(control_id)
        if record is None:
            if seen is not None:
                raise ControlRolledBack(f"control record {control_id} disappeared")
            return None
        plain = await self._cipher.open(record.item, control=True)
        try:
            body = json.loads(plain[_BODY]["S"])
            control = Control(control_id, record.head.rev, body, KeyRef.parse(record.head.key_ref))
        except (KeyError, ValueError, InvalidKeyRef) as exc:
            raise RecordTampered("control record does not match its layout") from exc
        if seen is not None and _position(control) < _position(seen):
            raise ControlRolledBack(f"control record {control_id} went back to an older revision")
        self._newest[control_id] = control
        return control

    async def write(
        self, control_id: str, body: Body, *, expected_rev: int | None, rev: int | None = None
    ) -> bool:
        """Write a revision (`rev`, default the next) sealed under the active key; False if
        another writer got there first."""
        item: Item = {
            PARTITION_KEY: {"S": control_id},
            "rev": {"N": str(rev if rev is not None else (expected_rev or 0) + 1)},
            _BODY: {"S": json.dumps(body, sort_keys=True, separators=(",", ":"))},
        }
        sealed = await self._cipher.seal(item)
        result = await self._store.put(sealed, expected_rev=expected_rev)
        if result.written:
            # Our own write is the newest revision now; read() checks later ones against it.
            written = Control(
                control_id, int(item["rev"]["N"]), body, KeyRef.parse(sealed[KEY_REF]["S"])
            )
            self._newest[control_id] = written
        return result.written

    async def update(
        self, control_id: str, change: Callable[[Body], Awaitable[Body]]
    ) -> tuple[Body, bool]:
        """Apply `change` to the body, as a conditional write retried on conflict.

        Returns the body in force and whether anything was written. A change that returns the
        same body writes nothing, unless the record is sealed under another key than the active
        one: then it is re-sealed, content unchanged (how rotation moves control records).
        """
        for _ in range(_RETRIES):
            control = await self.read(control_id)
            if control is None:
                raise NotProvisioned("the table has no control records: run `userstore provision`")
            body = await change(control.body)
            if body == control.body and control.key_ref == self._cipher.active:
                return body, False
            if await self.write(control_id, body, expected_rev=control.rev):
                return body, True
        raise WriteConflict("the control record kept changing under us")

    async def restore(self, control_id: str) -> bool:
        """Put back the newest body this process has verified, after a rollback (a replay).

        Written with a revision above both, so it is the newest revision again."""
        seen = self._newest.get(control_id)
        if seen is None:
            return False
        record = await self._store.get(control_id)
        current = None if record is None else record.head.rev
        rev = max(seen.rev, current or 0) + 1
        return await self.write(control_id, seen.body, expected_rev=current, rev=rev)
