"""How a UserState is laid out as a DynamoDB item (pure: no I/O, no crypto).

Every layout shares the signed-only attributes that tables, indexes and rotation rely on:

    user_id      S  partition key
    rev          N  revision; every write is conditioned on it
    key_ref      S  the key (or material version) the record is sealed under
    email_idx    S  blind index of the email: "<index key version>:<HMAC>" (if any email)
    expires_at   N  tombstones only: TTL epoch seconds
    format       N  record layout version (absent: 1)

What else a record holds depends on its format: format 2 (worker.record_format2, written by
every write) keeps the bookkeeping in one signed-only binary attribute and the clock and claims
in one encrypted one; format 1 (worker.record_format1, read only) had an attribute each. The
SDK adds `*amzn-ddb-map-desc*` and `*amzn-ddb-map-sig*`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import record_format1 as format1
from . import record_format2 as format2
from .errors import RecordTampered
from .profile import Presence, Remembered, UserState, id_tag, stamp_of

Item = dict[str, dict[str, Any]]  # DynamoDB JSON

RECORD_FORMAT = 2
FORMATS = (1, 2)
PARTITION_KEY = "user_id"
KEY_REF = "key_ref"
EMAIL_INDEX = "email_idx"
FORMAT = "format"
_COMMON = frozenset({PARTITION_KEY, "rev", KEY_REF, "expires_at", FORMAT, EMAIL_INDEX})
# Signed but not encrypted, in any format: the SDK is told the union (names don't collide).
SIGN_ONLY = _COMMON | format1.SIGN_ONLY | {format2.HEAD}


@dataclass(frozen=True)
class RecordHead:
    """The signed-only bookkeeping of a stored item, read without verifying it.

    Before verification it may only decide skips a table writer can't forge (see
    `profile.skips_unverified`) and find records sealed under an old key or in an old format;
    anything that changes a record, or that drops an event, is decided after the signature has
    been checked.
    """

    user_id: str
    rev: int
    presence: Presence | None
    recent_events: tuple[Remembered, ...]
    key_ref: str
    expires_at: int | None = None
    email_index: str | None = None
    format: int = RECORD_FORMAT

    def remembers(self, event_id: str) -> bool:
        tag = id_tag(event_id)
        return any(entry.id_tag == tag for entry in self.recent_events)

    @property
    def index_version(self) -> int | None:
        """The blind-index key version the email token was made with (None: no email)."""
        if not self.email_index:
            return None
        return int(self.email_index.partition(":")[0])


def record_format(item: Item) -> int:
    return int(item[FORMAT]["N"]) if FORMAT in item else 1


def read_head(item: Item) -> RecordHead:
    try:
        layout = record_format(item)
        if layout == 2:
            presence, recent = format2.unpack_head(item[format2.HEAD]["B"])
        elif layout == 1:
            presence, recent = format1.read_presence(item), format1.read_recent(item)
        else:
            raise ValueError("unknown record format")
        return RecordHead(
            user_id=item[PARTITION_KEY]["S"],
            rev=int(item["rev"]["N"]),
            presence=presence,
            recent_events=recent,
            key_ref=item.get(KEY_REF, {}).get("S", ""),
            expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
            email_index=item.get(EMAIL_INDEX, {}).get("S"),
            format=layout,
        )
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise RecordTampered("stored record has malformed bookkeeping attributes") from exc


def check_stamps(state: UserState, now: datetime, max_skew: timedelta) -> None:
    """Raise RecordTampered for a stored stamp later than `now + max_skew`.

    Every stamp stored comes from an event that passed `profile.check_window` when applied, so
    none can be beyond the skew allowance (replicas' clocks are assumed to agree far better
    than that). A later one was written by someone else, say to make every later event stale.
    """
    horizon = stamp_of(now + max_skew, "").partition("|")[0]
    stamps = {"reset stamp": state.root_reset, "presence stamp": state.presence_stamp}
    for name, stamp in stamps.items():
        if stamp.partition("|")[0] > horizon:  # fixed width, so strings compare as times
            raise RecordTampered(f"stored record's {name} is later than the clock skew allows")


def to_item(
    user_id: str,
    state: UserState,
    *,
    rev: int,
    recent_events: tuple[Remembered, ...],
    expires_at: int | None,
    email_index: str | None = None,
) -> Item:
    """The plaintext format-2 item to seal: `h` signed only, `d` to be encrypted."""
    item: Item = {
        PARTITION_KEY: {"S": user_id},
        "rev": {"N": str(rev)},
        FORMAT: {"N": str(RECORD_FORMAT)},
        format2.HEAD: {"B": format2.pack_head(state.presence, recent_events)},
        format2.DATA: {"B": format2.pack_data(state)},
    }
    if expires_at is not None:
        item["expires_at"] = {"N": str(expires_at)}
    if email_index is not None:
        item[EMAIL_INDEX] = {"S": email_index}
    return item


def from_item(item: Item) -> UserState:
    """A verified, decrypted item (either format) back to the state it was made from."""
    head = read_head(item)
    try:
        if head.format == 2:
            extra = set(item) - SIGN_ONLY - {format2.DATA}
            if extra:
                raise ValueError("attributes a format-2 record does not have")
            return format2.unpack_data(item[format2.DATA]["B"], head.presence)
        return format1.from_item(item, frozenset(item) - SIGN_ONLY)
    except (KeyError, ValueError, TypeError, IndexError, zlib.error) as exc:
        raise RecordTampered("stored record does not match the record layout") from exc
