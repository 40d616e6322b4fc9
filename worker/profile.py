"""Pure rules for a user's stored profile: how events merge, whatever order they arrive in.

The state is a last-writer-wins map keyed by *stamps*: an event's stamp is its `occurred_at`
(UTC, fixed width) followed by a 32-bit digest of its `event_id` (the tie-break), so stamps
order events totally and compare as plain strings. Two events tie only within one microsecond,
so 32 bits tell them apart; the digest keeps a stored stamp at 12 bytes (record format 2).

A profile is flattened into leaf paths: `email`, `address.locality`, `attributes.<name>`.
- every leaf has an Entry: the stamp of the last event that set or removed it;
- `resets` remember when a container was wiped: `""` (the whole profile, by a create or a
  delete), `address` or `attributes` (by a merge patch that sets them to null);
- `presence` is a register: creates and updates make the user present (an update is an
  upsert), deletes make it deleted.

Applying an event is a join with the event's own state: per key, the higher stamp wins. Joins
are commutative, associative and idempotent, so the state after a set of events does not depend
on delivery order or duplicates. After each join, entries older than a reset that covers them are
pruned: they can never become visible again. A consequence worth knowing: when the last event is
a delete, every entry is older than the root reset, so a tombstone holds no personal data.

Nothing here does I/O or reads a clock: `now` is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from userstore.events import EventType, UserCreated, UserDeleted, UserUpdated

from .errors import EventOutOfRange

JsonValue = Any  # a JSON-native value: str, int, float, bool, list[str] or dict
Stamp = str
Event = UserCreated | UserUpdated | UserDeleted

ROOT = ""  # the reset key for the whole profile
CONTAINERS = frozenset({"address", "attributes"})
NO_STAMP: Stamp = ""  # sorts before every real stamp


class Presence(StrEnum):
    PRESENT = "present"
    DELETED = "deleted"


TIE_BYTES = 4  # the stamp's tie-break: this many bytes of SHA-256 of the event id, in hex


def stamp_of(occurred_at: datetime, event_id: str) -> Stamp:
    """The event's position in the total order: UTC time (fixed width), then the tie-break."""
    utc = occurred_at.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S.%fZ}|{tie_break(event_id)}"


def tie_break(event_id: str) -> str:
    return hashlib.sha256(event_id.encode()).digest()[:TIE_BYTES].hex()


def event_stamp(event: Event) -> Stamp:
    return stamp_of(event.occurred_at, event.event_id)


@dataclass(frozen=True)
class Entry:
    """The last write to one leaf path; `value is None` means the field was removed."""

    stamp: Stamp
    value: JsonValue | None


@dataclass
class UserState:
    """Everything the store knows about one user, decrypted. Compare with ==."""

    presence: Presence | None = None
    presence_stamp: Stamp = NO_STAMP
    resets: dict[str, Stamp] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def root_reset(self) -> Stamp:
        return self.resets.get(ROOT, NO_STAMP)

    @property
    def max_stamp(self) -> Stamp:
        """The newest stamp the state has seen (the presence register always holds it)."""
        return self.presence_stamp


def container_of(path: str) -> str | None:
    head, dot, _ = path.partition(".")
    return head if dot and head in CONTAINERS else None


def _covering_reset(state: UserState, path: str) -> Stamp:
    container = container_of(path)
    root = state.root_reset
    if container is None:
        return root
    return max(root, state.resets.get(container, NO_STAMP))


def changes_of(event: Event) -> UserState:
    """The event expressed as a state, ready to be joined."""
    stamp = event_stamp(event)
    if isinstance(event, UserDeleted):
        return UserState(Presence.DELETED, stamp, {ROOT: stamp}, {})
    if isinstance(event, UserCreated):
        full = event.data.model_dump(mode="json", exclude_none=True)
        entries = {path: Entry(stamp, value) for path, value in flatten(full).items()}
        return UserState(Presence.PRESENT, stamp, {ROOT: stamp}, entries)
    patch = event.data.model_dump(mode="json", exclude_unset=True)
    resets: dict[str, Stamp] = {}
    entries = {}
    for name, value in patch.items():
        if name in CONTAINERS and value is None:
            resets[name] = stamp
        elif name in CONTAINERS:
            for sub, sub_value in value.items():
                entries[f"{name}.{sub}"] = Entry(stamp, sub_value)
        else:
            entries[name] = Entry(stamp, value)
    return UserState(Presence.PRESENT, stamp, resets, entries)


def flatten(profile: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """Nested profile -> leaf paths. Containers become `container.key` paths."""
    leaves: dict[str, JsonValue] = {}
    for name, value in profile.items():
        if name in CONTAINERS:
            for sub, sub_value in value.items():
                leaves[f"{name}.{sub}"] = sub_value
        else:
            leaves[name] = value
    return leaves


def join(a: UserState, b: UserState) -> UserState:
    """Least upper bound of two states: per key, the higher stamp wins; then prune."""
    if (b.presence_stamp, b.presence or "") > (a.presence_stamp, a.presence or ""):
        presence, presence_stamp = b.presence, b.presence_stamp
    else:
        presence, presence_stamp = a.presence, a.presence_stamp
    resets = dict(a.resets)
    for key, stamp in b.resets.items():
        resets[key] = max(stamp, resets.get(key, NO_STAMP))
    entries = dict(a.entries)
    for path, entry in b.entries.items():
        mine = entries.get(path)
        if mine is None or entry.stamp > mine.stamp:
            entries[path] = entry
    return prune(UserState(presence, presence_stamp, resets, entries))


def prune(state: UserState) -> UserState:
    """Drop what a reset has made invisible for good; keeps the stored form canonical."""
    root = state.root_reset
    resets = {k: s for k, s in state.resets.items() if k == ROOT or s > root}
    pruned = UserState(state.presence, state.presence_stamp, resets, {})
    pruned.entries = {
        path: entry
        for path, entry in state.entries.items()
        if entry.stamp >= _covering_reset(pruned, path)  # same stamp: set by the resetting event
    }
    return pruned


def apply(state: UserState, event: Event) -> UserState:
    return join(state, changes_of(event))


def view(state: UserState) -> dict[str, JsonValue] | None:
    """The profile a reader sees, or None when the user is deleted or was never present."""
    if state.presence is not Presence.PRESENT:
        return None
    profile: dict[str, JsonValue] = {}
    for path in sorted(state.entries):
        entry = state.entries[path]
        if entry.value is None:
            continue
        container = container_of(path)
        if container is None:
            profile[path] = entry.value
        else:
            profile.setdefault(container, {})[path[len(container) + 1 :]] = entry.value
    return profile


class Seen(StrEnum):
    """What a record's signed-only bookkeeping says about an event, read before verifying it."""

    NEW = "new"  # not remembered: apply it (staleness is decided on the verified state)
    DUPLICATE = "duplicate"  # remembered with the same content digest
    UNCHECKED = "unchecked"  # remembered with no digest to compare (older record, retired key)
    REUSED = "reused"  # remembered with a *different* content digest
    STALE = "stale"  # at or below the last create or delete: every write it makes is shadowed


@dataclass(frozen=True)
class Digest:
    """An event's keyed content digest: `DIGEST_BITS` of HMAC under index key `version`."""

    version: int
    tag: bytes


@dataclass(frozen=True)
class Remembered:
    """One event a record remembers: a digest of its id, and of its content if known.

    `content` is None for an entry made under another index key version than the one the
    record's digests are under (or before digests existed): it can't be compared.
    """

    id_tag: bytes
    content: Digest | None = None


def precheck(event_id: str, digest: Digest, recent: tuple[Remembered, ...]) -> Seen:
    """`digest` is the event's `content_digest`; `recent` holds `remember`ed entries."""
    wanted = id_tag(event_id)
    for entry in recent:
        if entry.id_tag != wanted:
            continue
        if entry.content is None or entry.content.version != digest.version:
            return Seen.UNCHECKED  # no digest, or one made under another index key version
        # Plain ==: nothing secret to time, and a forged entry is checked before it is trusted.
        return Seen.DUPLICATE if entry.content.tag == digest.tag else Seen.REUSED
    return Seen.NEW


def is_stale(event: Event, state: UserState) -> bool:
    """At or below the verified state's last create or delete: every write is shadowed."""
    return event_stamp(event) <= state.root_reset


def skips_unverified(seen: Seen, event: Event) -> bool:
    """Whether the event may be acknowledged on the bookkeeping alone, before verification.

    Only a duplicate create or update whose remembered digest matches. A table writer can forge
    `recent_events` but not a matching digest: it is keyed (see `content_digest`), so without the
    index key a forged entry is either digest-less or wrong, and both are verified first. Stale
    skips rest on `reset_stamp`, which a writer can set (a far-future one would hide every later
    event), and a skipped delete would keep personal data: those are verified too.
    """
    return seen is Seen.DUPLICATE and not isinstance(event, UserDeleted)


def check_window(
    occurred_at: datetime, now: datetime, tombstone_ttl: timedelta, max_skew: timedelta
) -> None:
    """Refuse events the store can't order safely.

    Older than the tombstone horizon: the tombstone that would have shadowed it may have expired,
    so applying it could bring a deleted user back. Too far in the future: it would win every
    last-writer-wins comparison until that time.
    """
    if occurred_at < now - tombstone_ttl:
        horizon_s = int(tombstone_ttl.total_seconds())
        raise EventOutOfRange(f"occurred_at is older than the tombstone horizon ({horizon_s} s)")
    if occurred_at > now + max_skew:
        raise EventOutOfRange(
            f"occurred_at is more than {int(max_skew.total_seconds())} s in the future"
        )


RECENT_EVENTS = 16  # events remembered per record, for free duplicate detection
# A remembered id is a 64-bit digest: a new event matches one of the RECENT_EVENTS by chance
# with probability 16 * 2**-64 (about 1e-18), and must then match its 32-bit content digest
# too to be skipped. A reused id with different content passes as a duplicate with probability
# 2**-32. Forging a matching entry needs the index key. See docs/design.md, "Record format 2".
ID_TAG_BYTES = 8
DIGEST_BITS = 32
DIGEST_PURPOSE = b"userstore-event-digest/v1"


def id_tag(event_id: str) -> bytes:
    """How a record remembers an event id (not secret: event ids are not personal data)."""
    return hashlib.sha256(b"userstore-event-id/v1\0" + event_id.encode()).digest()[:ID_TAG_BYTES]


def event_content(event: Event) -> bytes:
    """What makes two deliveries of one event id the same event: canonical JSON of the type,
    user id, occurred_at (UTC, fixed width) and data (the opened data, for a sealed event).
    Not the trace id or the schema version: a publisher's retry may change those."""
    if isinstance(event, UserCreated):
        data: JsonValue = event.data.model_dump(mode="json", exclude_none=True)
    elif isinstance(event, UserUpdated):
        data = event.data.model_dump(mode="json", exclude_unset=True)
    else:
        data = None
    occurred_at = event_stamp(event).partition("|")[0]
    content = [str(event.type), event.user_id, occurred_at, data]
    return json.dumps(content, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def content_digest(event: Event, key: bytes, key_version: int) -> Digest:
    """The HMAC (first DIGEST_BITS) of the event's content, under index key version `key_version`.

    Keyed, with a key derived from an index key (`key`) for this purpose only: the digest sits
    in signed-only plaintext, and a plain hash of, say, `{"email_verified": true}` with a known
    user id and time would let a table reader test guesses of the data.
    """
    derived = hmac.new(key, DIGEST_PURPOSE, hashlib.sha256).digest()
    mac = hmac.new(derived, event_content(event), hashlib.sha256).digest()
    return Digest(key_version, mac[: DIGEST_BITS // 8])


def remember(
    recent: tuple[Remembered, ...], event_id: str, digest: Digest
) -> tuple[Remembered, ...]:
    """Most recent last; bounded so the record stays small. A record keeps digests under one
    index key version: entries under another lose theirs (they then read as UNCHECKED)."""
    kept = tuple(
        e if e.content is None or e.content.version == digest.version else Remembered(e.id_tag)
        for e in recent
    )
    return (*kept, Remembered(id_tag(event_id), digest))[-RECENT_EVENTS:]


__all__ = [
    "DIGEST_BITS",
    "RECENT_EVENTS",
    "ROOT",
    "Digest",
    "Entry",
    "Event",
    "EventType",
    "Presence",
    "Remembered",
    "Seen",
    "Stamp",
    "UserState",
    "apply",
    "changes_of",
    "check_window",
    "content_digest",
    "event_content",
    "event_stamp",
    "flatten",
    "id_tag",
    "is_stale",
    "join",
    "precheck",
    "prune",
    "remember",
    "skips_unverified",
    "stamp_of",
    "tie_break",
    "view",
]
