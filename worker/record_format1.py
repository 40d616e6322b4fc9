"""Record format 1, as userstore 0.4 and earlier wrote it: read, never written by the worker.

Signed-only bookkeeping, one attribute each:

    presence         S  present | deleted
    presence_stamp   S  stamp of the newest event seen
    reset_stamp      S  stamp of the last create or delete
    recent_events    L  the last 50 events applied: "<event id><TAB><digest>" (older: bare ids);
                        the digest is "<index key version>:<64-bit HMAC, base64url>"

Encrypted and signed: one attribute per top-level claim (`email`, `address`, ...) holding the
claim as JSON, plus `clock`: the per-field stamps and container resets. Format 1 stamps end in
the full event id; reading converts them to format 2's tie-break (profile.tie_break), which
orders ties within one microsecond differently, and nothing else.

`to_item` stays as the reference of the layout: tests write format-1 records with it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .profile import (
    ROOT,
    Digest,
    Entry,
    Presence,
    Remembered,
    Stamp,
    UserState,
    flatten,
    id_tag,
    tie_break,
    view,
)

Item = dict[str, dict[str, Any]]

SIGN_ONLY = frozenset({"presence", "presence_stamp", "reset_stamp", "recent_events"})
CLOCK = "clock"
DIGEST_SEPARATOR = "\t"


def read_presence(item: Item) -> Presence | None:
    presence = item.get("presence", {}).get("S")
    return Presence(presence) if presence else None


def read_recent(item: Item) -> tuple[Remembered, ...]:
    return tuple(_remembered(v["S"]) for v in item.get("recent_events", {}).get("L", []))


def _remembered(entry: str) -> Remembered:
    event_id, _, digest = entry.partition(DIGEST_SEPARATOR)
    version, colon, mac = digest.partition(":")
    if not colon:
        return Remembered(id_tag(event_id))
    try:
        tag = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        content = Digest(int(version), tag[:4])  # format 2 keeps the first 32 of the 64 bits
    except (ValueError, binascii.Error):
        return Remembered(id_tag(event_id))  # garbled: nothing to compare, so it is verified
    return Remembered(id_tag(event_id), content)


def from_item(item: Item, user_fields: frozenset[str]) -> UserState:
    """A verified, decrypted format-1 item back to its state; `user_fields` are the names that
    are not bookkeeping (the claims)."""
    clock = json.loads(item[CLOCK]["S"])
    claims = {name: json.loads(item[name]["S"]) for name in user_fields if name != CLOCK}
    values = flatten(claims)
    entries = {
        path: Entry(_converted(stamp), None if removed else values[path])
        for path, (stamp, removed) in clock["entries"].items()
    }
    resets = {k: _converted(s) for k, s in clock["resets"].items()}
    reset = item.get("reset_stamp", {}).get("S", "")
    if reset:
        resets[ROOT] = _converted(reset)
    presence_stamp = _converted(item.get("presence_stamp", {}).get("S", ""))
    return UserState(read_presence(item), presence_stamp, resets, entries)


def _converted(stamp: Stamp) -> Stamp:
    if not stamp:
        return stamp
    when, bar, event_id = stamp.partition("|")
    if not bar:
        raise ValueError("not a stamp")
    return f"{when}|{tie_break(event_id)}"


def to_item(
    user_id: str,
    state: UserState,
    *,
    rev: int,
    recent_events: tuple[str, ...],
    expires_at: int | None,
    email_index: str | None = None,
) -> Item:
    """A format-1 item as 0.4 wrote it (stamps as given). For tests of reading format 1."""
    item: Item = {
        "user_id": {"S": user_id},
        "rev": {"N": str(rev)},
        "presence": {"S": str(state.presence or "")},
        "presence_stamp": {"S": state.presence_stamp},
        "reset_stamp": {"S": state.root_reset},
        "recent_events": {"L": [{"S": event_id} for event_id in recent_events]},
        "format": {"N": "1"},
    }
    if expires_at is not None:
        item["expires_at"] = {"N": str(expires_at)}
    if email_index is not None:
        item["email_idx"] = {"S": email_index}
    for claim, value in (view(state) or {}).items():
        item[claim] = {"S": _dumps(value)}
    clock = {
        "resets": {k: s for k, s in state.resets.items() if k != ROOT},
        "entries": {p: [e.stamp, e.value is None] for p, e in state.entries.items()},
    }
    item[CLOCK] = {"S": _dumps(clock)}
    return item


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
