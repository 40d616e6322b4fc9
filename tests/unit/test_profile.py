"""The merge rules: order independence, idempotence, tombstones, windows. No AWS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness.model import expected_profiles
from tests.harness.strategies import deliveries, event_sets
from userstore.events import parse_event
from userstore.worker import profile
from userstore.worker.errors import EventOutOfRange
from userstore.worker.profile import Presence, Seen, UserState

T0 = "2026-11-01T10:00:00Z"


def ev(event_id: str, kind: str, at: str = T0, data: Any = None, user: str = "u1") -> Any:
    body: dict[str, Any] = {"event_id": event_id, "type": kind, "user_id": user, "occurred_at": at}
    if data is not None:
        body["data"] = data
    return parse_event(json.dumps(body))


def fold(events: list[Any]) -> dict[str, UserState]:
    states: dict[str, UserState] = {}
    for event in events:
        states[event.user_id] = profile.apply(states.get(event.user_id, UserState()), event)
    return states


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_delivery_order_with_duplicates_gives_the_reference_profiles(
    data: st.DataObject,
) -> None:
    events = data.draw(event_sets())
    delivered = data.draw(deliveries(events))
    states = fold([parse_event(json.dumps(e)) for e in delivered])
    in_order = fold([parse_event(json.dumps(e)) for e in events])
    # Same stored state (not only the same view) whatever the order: the form is canonical.
    assert states == in_order
    expected = expected_profiles(events)
    assert {uid: profile.view(s) for uid, s in states.items()} == expected


def test_create_then_patch_merges_nested_fields() -> None:
    state = fold(
        [
            ev(
                "e1",
                "user.created",
                data={"email": "a@example.org", "address": {"locality": "Leeds"}},
            ),
            ev(
                "e2",
                "user.updated",
                "2026-11-01T10:00:01Z",
                {"address": {"country": "GB"}, "email": None},
            ),
        ]
    )["u1"]
    assert profile.view(state) == {"address": {"country": "GB", "locality": "Leeds"}}


def test_older_patch_arriving_late_does_not_override_newer_value() -> None:
    newer = ev("e2", "user.updated", "2026-11-01T10:00:02Z", {"given_name": "New"})
    older = ev("e1", "user.updated", "2026-11-01T10:00:01Z", {"given_name": "Old"})
    assert profile.view(fold([newer, older])["u1"]) == {"given_name": "New"}


def test_tombstone_holds_no_personal_data_and_blocks_older_events() -> None:
    created = ev("e1", "user.created", data={"email": "a@example.org", "attributes": {"x": 1}})
    patched = ev("e2", "user.updated", "2026-11-01T10:00:01Z", {"attributes": {"y": "secret"}})
    deleted = ev("e3", "user.deleted", "2026-11-01T10:00:02Z")
    state = fold([created, patched, deleted])["u1"]
    assert state.presence is Presence.DELETED
    assert state.entries == {}
    assert profile.view(state) is None
    # Replaying the older events changes nothing.
    assert fold([created, patched, deleted, created, patched])["u1"] == state


def test_update_after_delete_is_an_upsert() -> None:
    state = fold(
        [
            ev("e1", "user.created", data={"email": "a@example.org"}),
            ev("e2", "user.deleted", "2026-11-01T10:00:01Z"),
            ev("e3", "user.updated", "2026-11-01T10:00:02Z", {"given_name": "Back"}),
        ]
    )["u1"]
    assert profile.view(state) == {"given_name": "Back"}


def test_ties_on_occurred_at_are_broken_by_a_digest_of_the_event_id() -> None:
    a = ev("a", "user.updated", data={"given_name": "A"})
    b = ev("b", "user.updated", data={"given_name": "B"})
    winner = max([a, b], key=lambda e: profile.tie_break(e.event_id))
    assert (
        profile.view(fold([a, b])["u1"])
        == profile.view(fold([b, a])["u1"])
        == {"given_name": winner.data.given_name}
    )


def test_stamps_sort_like_time_then_tie_break_and_store_no_event_id() -> None:
    early = profile.stamp_of(datetime(2026, 1, 1, 23, 0, tzinfo=UTC), "zzz")
    late = profile.stamp_of(datetime(2026, 1, 2, 0, 0, 0, 1, tzinfo=UTC), "aaa")
    assert early < late
    same = datetime(2026, 1, 1, tzinfo=UTC)
    assert profile.stamp_of(same, "a") != profile.stamp_of(same, "ab")
    assert profile.stamp_of(same, "a").endswith("|" + profile.tie_break("a"))
    assert len(profile.tie_break("a")) == 2 * profile.TIE_BYTES


D1 = profile.Digest(1, b"\x00\x00\x00\x01")  # a digest under index key version 1
D1_OTHER = profile.Digest(1, b"\x00\x00\x00\x02")


def _seen(event_id: str, digest: profile.Digest | None = D1) -> profile.Remembered:
    return profile.Remembered(profile.id_tag(event_id), digest)


@pytest.mark.parametrize(
    ("event_id", "recent", "expected"),
    [
        ("e1", (_seen("e1"),), Seen.DUPLICATE),
        ("e1", (_seen("e1", D1_OTHER),), Seen.REUSED),
        ("e1", (_seen("e1", None),), Seen.UNCHECKED),  # remembered before digests
        ("e1", (_seen("e1", profile.Digest(2, D1.tag)),), Seen.UNCHECKED),  # other key version
        ("e1", (_seen("e10"), _seen("e"), _seen("e1 ")), Seen.NEW),
        ("e3", (_seen("e1"),), Seen.NEW),
    ],
)
def test_precheck(event_id: str, recent: tuple[profile.Remembered, ...], expected: Seen) -> None:
    assert profile.precheck(event_id, D1, recent) is expected


def test_staleness_is_decided_on_the_verified_root_reset() -> None:
    created = ev("c", "user.created", "2026-11-01T10:00:00Z", {"given_name": "A"})
    state = profile.apply(profile.UserState(), created)
    older = ev("o", "user.updated", "2026-11-01T09:00:00Z", {"given_name": "B"})
    newer = ev("n", "user.updated", "2026-11-01T11:00:00Z", {"given_name": "B"})
    assert profile.is_stale(older, state) and profile.is_stale(created, state)
    assert not profile.is_stale(newer, state)


@pytest.mark.parametrize(
    ("kind", "seen", "expected"),
    [
        ("user.created", Seen.DUPLICATE, True),
        ("user.updated", Seen.DUPLICATE, True),
        ("user.deleted", Seen.DUPLICATE, False),  # a skipped delete would keep personal data
        ("user.updated", Seen.UNCHECKED, False),
        ("user.updated", Seen.REUSED, False),
        ("user.updated", Seen.STALE, False),  # reset_stamp is forgeable
        ("user.deleted", Seen.STALE, False),
        ("user.updated", Seen.NEW, False),
    ],
)
def test_only_a_digest_matched_duplicate_of_a_create_or_update_skips_unverified(
    kind: str, seen: Seen, expected: bool
) -> None:
    data = {"given_name": "A"} if kind != "user.deleted" else None
    assert profile.skips_unverified(seen, ev("e1", kind, data=data)) is expected


KEY = bytes(range(32))


def test_content_digest_is_keyed_versioned_and_32_bits() -> None:
    event = ev("e1", "user.updated", data={"given_name": "Ada"})
    digest = profile.content_digest(event, KEY, 3)
    assert digest.version == 3 and len(digest.tag) * 8 == profile.DIGEST_BITS == 32
    assert digest == profile.content_digest(event, KEY, 3)
    assert digest != profile.content_digest(event, bytes(32), 3)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # the same instant written with another offset, and keys in another order
        (
            ev("e1", "user.created", "2026-11-01T10:00:00Z", {"given_name": "A", "email": "a@b.o"}),
            ev(
                "e1",
                "user.created",
                "2026-11-01T11:00:00+01:00",
                {"email": "a@b.o", "given_name": "A"},
            ),
        ),
        (ev("e1", "user.deleted"), ev("e1", "user.deleted", data={})),
    ],
)
def test_content_digest_ignores_spelling(a: Any, b: Any) -> None:
    assert profile.content_digest(a, KEY, 1) == profile.content_digest(b, KEY, 1)


@pytest.mark.parametrize(
    "other",
    [
        ev("e1", "user.updated", data={"given_name": "Bea"}),  # data
        ev("e1", "user.updated", data={"given_name": "Ada", "family_name": None}),  # a removal
        ev("e1", "user.updated", "2026-11-01T10:00:01Z", {"given_name": "Ada"}),  # time
        ev("e1", "user.updated", data={"given_name": "Ada"}, user="u2"),  # user
        ev("e1", "user.created", data={"given_name": "Ada"}),  # type
    ],
)
def test_content_digest_tells_content_apart(other: Any) -> None:
    mine = ev("e1", "user.updated", data={"given_name": "Ada"})
    assert profile.content_digest(mine, KEY, 1) != profile.content_digest(other, KEY, 1)


def test_window_rejects_events_beyond_the_tombstone_horizon_and_from_the_future() -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    ttl, skew = timedelta(days=30), timedelta(minutes=5)
    profile.check_window(now - timedelta(days=29), now, ttl, skew)
    profile.check_window(now + timedelta(minutes=4), now, ttl, skew)
    with pytest.raises(EventOutOfRange, match="tombstone horizon"):
        profile.check_window(now - timedelta(days=31), now, ttl, skew)
    with pytest.raises(EventOutOfRange, match="future"):
        profile.check_window(now + timedelta(minutes=6), now, ttl, skew)


def test_remember_keeps_the_most_recent_ids_bounded() -> None:
    recent: tuple[profile.Remembered, ...] = ()
    for i in range(profile.RECENT_EVENTS + 5):
        recent = profile.remember(recent, f"e{i}", D1)
    assert len(recent) == profile.RECENT_EVENTS
    assert recent[-1] == _seen(f"e{profile.RECENT_EVENTS + 4}")
    assert profile.precheck("e0", D1, recent) is Seen.NEW
    assert profile.precheck("e9", D1, recent) is Seen.DUPLICATE


def test_remember_keeps_digests_under_one_index_key_version() -> None:
    recent = profile.remember(profile.remember((), "e1", D1), "e2", profile.Digest(2, D1.tag))
    assert recent == (_seen("e1", None), _seen("e2", profile.Digest(2, D1.tag)))
    assert profile.precheck("e1", profile.Digest(2, D1.tag), recent) is Seen.UNCHECKED
