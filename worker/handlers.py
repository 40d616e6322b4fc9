"""One user's events -> one decision about their record. Read top to bottom (`handle_burst`;
`handle` is a burst of one):

    window check, per event -> read the record -> per event, in order: duplicate/stale check
    (bookkeeping only, as the events before it left it) -> verify and decrypt (once, when first
    needed) -> merge -> validate -> seal once -> write once, conditioned on the revision read
    -> on conflict, decide the whole burst again

The events of a burst are joined exactly as one-by-one handling would join them (the merge is a
join-semilattice), so a burst stores what handling them one at a time stores, in one write.

Only a duplicate create or update with a matching content digest is acknowledged before the
record is verified; every other skip or refusal rests on bookkeeping a table writer could forge.

The caller may pass what it already knows of the record (`Hints`, filled by one BatchGetItem per
SQS batch); a stale hint is harmless because the conditional write catches it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from userstore.events import Profile

from . import profile
from .blind_index import IndexKeys
from .crypto import ItemCipher
from .errors import EventIdReused, EventOutOfRange, InvalidResult, WriteConflict
from .ports import StoredRecord, UsersTable
from .profile import Event, Presence, Seen, UserState
from .record import Item, check_stamps, from_item, read_head, to_item

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


Result = Outcome | Exception  # one event's answer: its outcome, or the error it met


@dataclass(frozen=True)
class _Candidate:
    """An event of a burst that passed the window check, with what its checks need."""

    position: int  # in the burst
    event: Event
    digest: profile.Digest


@dataclass
class _Burst:
    """A burst decided on one version of the record: each event's outcome, and what to write.

    `recent` and `exists` are the record's bookkeeping as the events decided so far would have
    left it, had each been written on its own; `state`, once opened, is the verified state
    they joined into (staleness is decided on it).
    """

    rev: int | None  # the revision read: the write is conditioned on it
    recent: tuple[profile.Remembered, ...]
    exists: bool
    state: UserState | None = None  # None: not opened yet
    outcomes: dict[int, Result] = field(default_factory=dict)
    applied: list[_Candidate] = field(default_factory=list)
    view: dict[str, Any] | None = None

    def join(self, candidate: _Candidate) -> None:
        assert self.state is not None
        event = candidate.event
        merged = profile.apply(self.state, event)
        if merged == self.state:
            self.outcomes[candidate.position] = Outcome.UNCHANGED
            return
        try:
            view = _validated_view(merged, event)
        except InvalidResult as exc:  # a poison event: skipped alone, the others go on
            self.outcomes[candidate.position] = exc
            return
        self.state, self.view = merged, view
        self.recent = profile.remember(self.recent, event.event_id, candidate.digest)
        self.exists = True
        self.applied.append(candidate)
        self.outcomes[candidate.position] = Outcome.APPLIED


def _known(seen: Seen, event: Event) -> Result | None:
    """What the verified record says of an event it already accounts for (None: a new one)."""
    if seen is Seen.REUSED:
        return EventIdReused(
            f"event {event.event_id}: this event id was applied before with different content"
        )
    if seen in (Seen.DUPLICATE, Seen.UNCHECKED):
        return Outcome.DUPLICATE
    if seen is Seen.STALE:
        return Outcome.STALE
    return None


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
        [result] = await self.handle_burst([event], hints)
        if isinstance(result, Exception):
            raise result
        return result

    async def handle_burst(
        self, events: Sequence[Event], hints: Hints | None = None
    ) -> list[Result]:
        """Apply one user's events, in the order given, with one open, one seal and one write.

        One result per event: its Outcome, or the error it met (a DeadLetter, a RetryLater, or a
        bug's exception). Each is what handling the events one by one would give, and so is the
        stored state (joins are associative): an event refused on its own (out of range, reused
        id, invalid result) is skipped and the others go on; an event remembered by the record or
        by an earlier event of the burst is a duplicate and costs nothing. The errors of the
        shared steps are shared: a failed read is every event's, a failed open every event's
        that needed it, a failed seal or write every event's it would have applied.
        """
        if len({event.user_id for event in events}) > 1:
            raise ValueError("a burst holds the events of one user")
        now = self._clock()
        results: dict[int, Result] = {}
        pending: list[_Candidate] = []
        for position, event in enumerate(events):
            try:
                pending.append(self._candidate(position, event, now))
            except EventOutOfRange as exc:
                results[position] = exc
        if pending:
            results |= await self._apply(pending, {} if hints is None else hints, now)
        return [results[position] for position in range(len(events))]

    def _candidate(self, position: int, event: Event, now: datetime) -> _Candidate:
        limits = self._limits
        profile.check_window(event.occurred_at, now, limits.tombstone_ttl, limits.max_clock_skew)
        index = self._index.current
        digest = profile.content_digest(
            event, index.keys[index.active_version], index.active_version
        )
        return _Candidate(position, event, digest)

    async def _apply(
        self, pending: list[_Candidate], hints: Hints, now: datetime
    ) -> dict[int, Result]:
        uid = pending[0].event.user_id
        try:
            current = hints[uid] if uid in hints else await self._store.get(uid)
        except Exception as exc:  # every event's failure, settled per event
            return dict.fromkeys((c.position for c in pending), exc)
        for attempt in range(self._limits.max_conflict_retries):
            burst = await self._decide(current, pending, now)
            if not burst.applied:
                return burst.outcomes
            try:
                sealed = await self._cipher.seal(self._item(uid, burst, now))
                result = await self._store.put(sealed, expected_rev=burst.rev)
            except Exception as exc:  # the failure of every event it applies
                return burst.outcomes | dict.fromkeys((c.position for c in burst.applied), exc)
            # A put whose answer was lost (dropped connection) is retried, and the retry then
            # fails its condition on our own write: the item it returns is the one we wrote.
            if result.written or (result.current is not None and result.current.item == sealed):
                hints[uid] = StoredRecord(sealed, read_head(sealed))
                return burst.outcomes
            # Someone else wrote first: decide the whole burst again on their state, after a
            # jittered pause so that a crowd of writers on one record spreads out.
            current = result.current
            hints[uid] = current
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311
        lost = self._limits.max_conflict_retries
        return burst.outcomes | {
            c.position: WriteConflict(
                f"event {c.event.event_id}: lost {lost} conditional writes in a row"
            )
            for c in burst.applied
        }

    async def _decide(
        self, current: StoredRecord | None, pending: list[_Candidate], now: datetime
    ) -> _Burst:
        """Each event's outcome on this version of the record, and the state to write.

        Every event is checked, in order, against the record's bookkeeping as the events before
        it left it, exactly as if each had been written on its own. The record is opened (one
        KMS call in `kms` mode) only when an event needs more than the bookkeeping.
        """
        if current is None:
            burst = _Burst(None, (), exists=False, state=UserState())
        else:
            burst = _Burst(current.head.rev, current.head.recent_events, exists=True)
        failed_open: Exception | None = None
        for candidate in pending:
            event = candidate.event
            if burst.exists:
                seen = profile.precheck(event.event_id, candidate.digest, burst.recent)
                if profile.skips_unverified(seen, event):
                    burst.outcomes[candidate.position] = Outcome.DUPLICATE
                    continue
                if burst.state is None and failed_open is None and current is not None:
                    # Raises RecordTampered for a forged item: a forged skip or reuse is
                    # reported as tampering, never acknowledged or blamed on the publisher.
                    try:
                        burst.state = from_item(await self._cipher.open(current.item))
                        check_stamps(burst.state, now, self._limits.max_clock_skew)
                    except Exception as exc:  # each event's that needed it
                        burst.state, failed_open = None, exc
                if failed_open is not None:
                    burst.outcomes[candidate.position] = failed_open
                    continue
                assert burst.state is not None
                if seen is Seen.NEW and profile.is_stale(event, burst.state):
                    seen = Seen.STALE
                known = _known(seen, event)
                if known is not None:
                    burst.outcomes[candidate.position] = known
                    continue
            burst.join(candidate)
        return burst

    def _item(self, user_id: str, burst: _Burst, now: datetime) -> Item:
        assert burst.state is not None
        return to_item(
            user_id,
            burst.state,
            rev=(burst.rev or 0) + 1,
            recent_events=burst.recent,
            expires_at=self._tombstone_expiry(burst.state, burst.applied[-1].event, now),
            email_index=self._index.token_for(burst.view),
        )

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
