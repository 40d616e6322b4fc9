"""One event -> one decision about one user's record. Read top to bottom:

    window check -> duplicate/stale check (bookkeeping only) -> verify and decrypt -> merge
    -> validate -> seal -> write conditioned on the revision read -> on conflict, re-decide

Only a duplicate create or update with a matching content digest is acknowledged before the
record is verified; every other skip or refusal rests on bookkeeping a table writer could forge.

The caller may pass what it already knows of the record (`Hints`, filled by one BatchGetItem per
SQS batch); a stale hint is harmless because the conditional write catches it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from userstore.events import Profile

from . import profile
from .blind_index import IndexKeys
from .crypto import ItemCipher
from .errors import EventIdReused, InvalidResult, WriteConflict
from .ports import StoredRecord, UsersTable
from .profile import Event, Presence, Seen, UserState
from .record import check_stamps, from_item, read_head, to_item

Hints = dict[str, StoredRecord | None]


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # seen before: no write (no KMS call unless a delete or legacy id)
    STALE = "stale"  # shadowed by a newer create or delete: verified first, no write
    UNCHANGED = "unchanged"  # merged to the same state: no write


@dataclass(frozen=True)
class HandlerLimits:
    tombstone_ttl: timedelta
    max_clock_skew: timedelta
    max_conflict_retries: int


def utcnow() -> datetime:
    return datetime.now(UTC)


class UserEventHandler:
    def __init__(
        self,
        store: UsersTable,
        cipher: ItemCipher,
        index: IndexKeys,
        limits: HandlerLimits,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._index = index
        self._limits = limits
        self._clock = clock

    async def prefetch(self, user_ids: Iterable[str]) -> Hints:
        return await self._store.get_many(user_ids)

    async def handle(self, event: Event, hints: Hints | None = None) -> Outcome:
        """Apply one event. Raises a DeadLetter or RetryLater error when it can't."""
        now = self._clock()
        limits = self._limits
        profile.check_window(event.occurred_at, now, limits.tombstone_ttl, limits.max_clock_skew)
        index = self._index.current
        digest = profile.content_digest(
            event, index.keys[index.active_version], index.active_version
        )
        hints = {} if hints is None else hints
        uid = event.user_id
        current = hints[uid] if uid in hints else await self._store.get(uid)

        for attempt in range(limits.max_conflict_retries):
            recent: tuple[profile.Remembered, ...] = ()
            if current is None:
                state, rev = UserState(), None
            else:
                head = current.head
                seen = profile.precheck(event.event_id, digest, head.recent_events)
                if profile.skips_unverified(seen, event):
                    return Outcome.DUPLICATE
                # Raises RecordTampered for a forged item: a forged skip or reuse is reported
                # as tampering, never acknowledged or blamed on the publisher.
                state = from_item(await self._cipher.open(current.item))
                check_stamps(state, now, limits.max_clock_skew)
                if seen is Seen.NEW and profile.is_stale(event, state):
                    seen = Seen.STALE
                if seen is Seen.REUSED:
                    raise EventIdReused(
                        f"event {event.event_id}: this event id was applied before "
                        "with different content"
                    )
                if seen in (Seen.DUPLICATE, Seen.UNCHECKED):
                    return Outcome.DUPLICATE
                if seen is Seen.STALE:
                    return Outcome.STALE
                rev, recent = head.rev, head.recent_events

            merged = profile.apply(state, event)
            if merged == state:
                return Outcome.UNCHANGED
            view = _validated_view(merged, event)

            item = to_item(
                uid,
                merged,
                rev=(rev or 0) + 1,
                recent_events=profile.remember(recent, event.event_id, digest),
                expires_at=self._tombstone_expiry(merged, event, now),
                email_index=self._index.token_for(view),
            )
            sealed = await self._cipher.seal(item)
            result = await self._store.put(sealed, expected_rev=rev)
            # A put whose answer was lost (dropped connection) is retried, and the retry then
            # fails its condition on our own write: the item it returns is the one we wrote.
            if result.written or (result.current is not None and result.current.item == sealed):
                hints[uid] = StoredRecord(sealed, read_head(sealed))
                return Outcome.APPLIED
            # Someone else wrote first: decide again on their state, after a jittered pause so
            # that a crowd of writers on one record spreads out instead of colliding again.
            current = result.current
            hints[uid] = current
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311
        lost = limits.max_conflict_retries
        raise WriteConflict(f"event {event.event_id}: lost {lost} conditional writes in a row")

    def _tombstone_expiry(self, state: UserState, event: Event, now: datetime) -> int | None:
        """Tombstones expire a TTL after the delete (or now, if the delete is dated later)."""
        if state.presence is not Presence.DELETED:
            return None
        return int((max(now, event.occurred_at) + self._limits.tombstone_ttl).timestamp())


def _validated_view(state: UserState, event: Event) -> dict[str, Any] | None:
    """The merged profile must still be a valid profile (bounds on attributes, ...)."""
    current = profile.view(state)
    if current is None:
        return None
    try:
        Profile.model_validate(current)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "data" for err in exc.errors()})
        raise InvalidResult(
            f"event {event.event_id}: the merged profile would be invalid at {', '.join(fields)}"
        ) from None
    return current
