"""What a table writer without the keys can do to a stored user record, for tampering tests.

Record format 2 keeps the bookkeeping in the signed-only binary `h` (readable and editable by
a table writer, but covered by the signature) and every stamp and claim in the encrypted `d`.
Format 1 (0.4's layout, still read) had plaintext stamps a writer could set, so attacks on
those stamps are tested on format-1 records that a test writes itself (`format1_item`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from userstore.worker import profile
from userstore.worker import record_format1 as format1
from userstore.worker import record_format2 as format2
from userstore.worker.profile import Event, Presence

Item = dict[str, Any]


def with_presence(item: Item, presence: Presence | None) -> Item:
    """`h` rewritten to say `presence` (say, hide a present user as deleted)."""
    _, recent = format2.unpack_head(item[format2.HEAD]["B"])
    return {**item, format2.HEAD: {"B": format2.pack_head(presence, recent)}}


def with_remembered(item: Item, event_id: str, tag: bytes | None) -> Item:
    """`h` with `event_id` spliced in as remembered: without a content digest (`tag` None), or
    with a guessed one (the writer can't compute the real one: it is keyed)."""
    presence, recent = format2.unpack_head(item[format2.HEAD]["B"])
    versions = {e.content.version for e in recent if e.content is not None}
    content = None if tag is None else profile.Digest(max(versions, default=1), tag)
    forged = (*recent, profile.Remembered(profile.id_tag(event_id), content))
    return {**item, format2.HEAD: {"B": format2.pack_head(presence, forged)}}


def with_data_of(item: Item, donor: Item) -> Item:
    """Another user's encrypted `d` (their clock and claims) copied into this record."""
    return {**item, format2.DATA: donor[format2.DATA]}


def format1_item(
    user: str,
    events: Iterable[Event],
    *,
    recent_events: tuple[str, ...] | None = None,
    email_index: str | None = None,
) -> Item:
    """The plaintext record 0.4 would have written after `events` (stamps ending in the event
    id, remembered ids bare unless given), for the cipher to seal."""
    applied = list(events)
    state = profile.UserState()
    for one in applied:
        state = profile.apply(state, one)
    ids = {profile.tie_break(e.event_id): e.event_id for e in applied}

    def old(stamp: str) -> str:
        when, _, tie = stamp.partition("|")
        return f"{when}|{ids[tie]}" if stamp else stamp

    as_written = profile.UserState(
        state.presence,
        old(state.presence_stamp),
        {k: old(v) for k, v in state.resets.items()},
        {p: profile.Entry(old(e.stamp), e.value) for p, e in state.entries.items()},
    )
    remembered = tuple(e.event_id for e in applied) if recent_events is None else recent_events
    return format1.to_item(
        user,
        as_written,
        rev=len(applied),
        recent_events=remembered,
        expires_at=None,
        email_index=email_index,
    )
