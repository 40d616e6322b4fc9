"""How a UserState is laid out as a DynamoDB item (pure: no I/O, no crypto).

Signed-only bookkeeping, readable without a key so that duplicates, stale events and records
sealed under an old key are found without decrypting:

    user_id          S  partition key
    rev              N  revision; every write is conditioned on it
    presence         S  present | deleted
    presence_stamp   S  stamp of the newest event seen
    reset_stamp      S  stamp of the last create or delete (events at or below it are no-ops)
    recent_events    L  the last RECENT_EVENTS events applied: "<event id><TAB><digest>" (older
                        records: the bare id); the digest is keyed, see profile.content_digest
    key_ref          S  the key (or material version) the record is sealed under
    email_idx        S  blind index of the email: "<index key version>:<HMAC>" (if any email)
    expires_at       N  tombstones only: TTL epoch seconds
    format           N  record layout version

Encrypted and signed, one attribute per top-level claim (`email`, `address`, ...) holding the
claim as JSON, plus `clock`: the per-field stamps and container resets. Absent claims are absent
attributes. The SDK adds `*amzn-ddb-map-desc*` and `*amzn-ddb-map-sig*`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .errors import RecordTampered
from .profile import (
    DIGEST_SEPARATOR,
    ROOT,
    Entry,
    Presence,
    Stamp,
    UserState,
    flatten,
    stamp_of,
    view,
)

Item = dict[str, dict[str, Any]]  # DynamoDB JSON

RECORD_FORMAT = 1
PARTITION_KEY = "user_id"
KEY_REF = "key_ref"
EMAIL_INDEX = "email_idx"
SIGN_ONLY = frozenset(
    {
        PARTITION_KEY,
        "rev",
        "presence",
        "presence_stamp",
        "reset_stamp",
        "recent_events",
        KEY_REF,
        "expires_at",
        "format",
        EMAIL_INDEX,
    }
)
CLOCK = "clock"


@dataclass(frozen=True)
class RecordHead:
    """The signed-only bookkeeping of a stored item, read without verifying it.

    Before verification it may only decide skips a table writer can't forge (see
    `profile.skips_unverified`) and find records sealed under an old key; anything that changes
    a record, or that drops an event, is decided after the signature has been checked.
    """

    user_id: str
    rev: int
    presence: Presence | None
    presence_stamp: Stamp
    reset_stamp: Stamp
    recent_events: tuple[str, ...]
    key_ref: str
    expires_at: int | None = None
    email_index: str | None = None

    @property
    def event_ids(self) -> tuple[str, ...]:
        """The remembered event ids, without their digests."""
        return tuple(entry.partition(DIGEST_SEPARATOR)[0] for entry in self.recent_events)

    @property
    def index_version(self) -> int | None:
        """The blind-index key version the email token was made with (None: no email)."""
        if not self.email_index:
            return None
        return int(self.email_index.partition(":")[0])


def read_head(item: Item) -> RecordHead:
    try:
        presence = item.get("presence", {}).get("S")
        return RecordHead(
            user_id=item[PARTITION_KEY]["S"],
            rev=int(item["rev"]["N"]),
            presence=Presence(presence) if presence else None,
            presence_stamp=item.get("presence_stamp", {}).get("S", ""),
            reset_stamp=item.get("reset_stamp", {}).get("S", ""),
            recent_events=tuple(v["S"] for v in item.get("recent_events", {}).get("L", [])),
            key_ref=item.get(KEY_REF, {}).get("S", ""),
            expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
            email_index=item.get(EMAIL_INDEX, {}).get("S"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise RecordTampered("stored record has malformed bookkeeping attributes") from exc


def check_stamps(head: RecordHead, now: datetime, max_skew: timedelta) -> None:
    """Raise RecordTampered for a stored stamp later than `now + max_skew`.

    Every stamp stored comes from an event that passed `profile.check_window` when applied, so
    none can be beyond the skew allowance (replicas' clocks are assumed to agree far better
    than that). A later one was written by someone else, say to make every later event stale.
    """
    horizon = stamp_of(now + max_skew, "").partition("|")[0]
    for name, stamp in (("reset_stamp", head.reset_stamp), ("presence_stamp", head.presence_stamp)):
        if stamp.partition("|")[0] > horizon:  # fixed width, so strings compare as times
            raise RecordTampered(f"stored record's {name} is later than the clock skew allows")


def to_item(
    user_id: str,
    state: UserState,
    *,
    rev: int,
    recent_events: tuple[str, ...],
    expires_at: int | None,
    email_index: str | None = None,
) -> Item:
    """The plaintext item to seal: bookkeeping as-is, claims and clock to be encrypted."""
    item: Item = {
        PARTITION_KEY: {"S": user_id},
        "rev": {"N": str(rev)},
        "presence": {"S": str(state.presence or "")},
        "presence_stamp": {"S": state.presence_stamp},
        "reset_stamp": {"S": state.root_reset},
        "recent_events": {"L": [{"S": event_id} for event_id in recent_events]},
        "format": {"N": str(RECORD_FORMAT)},
    }
    if expires_at is not None:
        item["expires_at"] = {"N": str(expires_at)}
    if email_index is not None:
        item[EMAIL_INDEX] = {"S": email_index}
    for claim, value in (view(state) or {}).items():
        item[claim] = {"S": _dumps(value)}
    clock = {
        "resets": {k: s for k, s in state.resets.items() if k != ROOT},
        "entries": {p: [e.stamp, e.value is None] for p, e in state.entries.items()},
    }
    item[CLOCK] = {"S": _dumps(clock)}
    return item


def from_item(item: Item) -> UserState:
    """A verified, decrypted item back to the state it was made from."""
    try:
        head = read_head(item)
        clock = json.loads(item[CLOCK]["S"])
        claims = {
            name: json.loads(value["S"])
            for name, value in item.items()
            if name not in SIGN_ONLY and name != CLOCK
        }
        values = flatten(claims)
        entries = {
            path: Entry(stamp, None if removed else values[path])
            for path, (stamp, removed) in clock["entries"].items()
        }
        resets = dict(clock["resets"])
    except (KeyError, ValueError, TypeError) as exc:
        raise RecordTampered("stored record does not match the record layout") from exc
    if head.reset_stamp:
        resets[ROOT] = head.reset_stamp
    return UserState(head.presence, head.presence_stamp, resets, entries)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
