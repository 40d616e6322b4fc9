"""Control records: the table's own signed configuration (active key, blind-index keys).

They live in the users table under ids holding a space, which no user id can contain, so they
are sealed and signed like user records (a table writer alone can't forge one) and their
changes flow through the table's stream to every replica.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .crypto import ItemCipher
from .errors import RecordTampered
from .record import PARTITION_KEY, Item
from .store import RecordStore

CONTROL_PREFIX = "userstore control/"
ACTIVE_KEY = CONTROL_PREFIX + "active-key"
INDEX_KEYS = CONTROL_PREFIX + "index-keys"
_BODY = "control"


def is_control(user_id: str) -> bool:
    return user_id.startswith(CONTROL_PREFIX)


@dataclass(frozen=True)
class Control:
    control_id: str
    rev: int
    body: dict[str, Any]
    key_ref: str


async def read_control(store: RecordStore, cipher: ItemCipher, control_id: str) -> Control | None:
    """The verified control record, or None if there is none yet."""
    record = await store.get(control_id)
    if record is None:
        return None
    plain = await cipher.open(record.item)
    try:
        body = json.loads(plain[_BODY]["S"])
    except (KeyError, ValueError) as exc:
        raise RecordTampered("control record does not match its layout") from exc
    return Control(control_id, record.head.rev, body, record.head.key_ref)


async def write_control(
    store: RecordStore,
    cipher: ItemCipher,
    control_id: str,
    body: dict[str, Any],
    *,
    expected_rev: int | None,
) -> bool:
    """Write a new revision; False if another writer got there first."""
    item: Item = {
        PARTITION_KEY: {"S": control_id},
        "rev": {"N": str((expected_rev or 0) + 1)},
        _BODY: {"S": json.dumps(body, sort_keys=True, separators=(",", ":"))},
    }
    sealed = await cipher.seal(item)
    result = await store.put(sealed, expected_rev=expected_rev)
    return result.written
