"""The item layouts: format 2 round trips, format 1 still reads, what is (not) in plaintext,
malformed bytes refused as tampering. No AWS, no crypto."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings

from tests.harness.strategies import event_sets
from userstore.events import parse_event
from userstore.worker import profile
from userstore.worker import record_format1 as format1
from userstore.worker import record_format2 as format2
from userstore.worker.errors import RecordTampered
from userstore.worker.profile import Presence, UserState
from userstore.worker.record import SIGN_ONLY, check_stamps, from_item, read_head, to_item

PERSONAL = ["ada@example.org", "Lovelace", "+447700900123", "1 High St", "secret-tag"]


def _state() -> UserState:
    created = parse_event(
        json.dumps(
            {
                "event_id": "e1",
                "type": "user.created",
                "user_id": "urn:fdc:gov.uk:2022:AbC-123",
                "occurred_at": "2026-11-01T10:00:00Z",
                "data": {
                    "email": "ada@example.org",
                    "family_name": "Lovelace",
                    "phone_number": "+447700900123",
                    "address": {"street_address": "1 High St"},
                    "attributes": {"tags": ["secret-tag"], "rank": 3},
                },
            }
        )
    )
    patch = parse_event(
        json.dumps(
            {
                "event_id": "e2",
                "type": "user.updated",
                "user_id": "urn:fdc:gov.uk:2022:AbC-123",
                "occurred_at": "2026-11-01T10:00:01Z",
                "data": {"given_name": None, "attributes": {"rank": None}},
            }
        )
    )
    return profile.apply(profile.apply(UserState(), created), patch)


DIGEST = profile.Digest(1, b"\x01\x02\x03\x04")
RECENT = (
    profile.Remembered(profile.id_tag("e1"), DIGEST),
    profile.Remembered(profile.id_tag("e2")),
)


def test_item_round_trips_to_the_same_state() -> None:
    state = _state()
    item = to_item("urn:fdc:gov.uk:2022:AbC-123", state, rev=3, recent_events=RECENT, expires_at=9)
    assert from_item(item) == state
    head = read_head({**item, "key_ref": {"S": "kms:arn"}})
    assert (head.rev, head.recent_events, head.key_ref) == (3, RECENT, "kms:arn")
    assert (head.format, head.presence, head.expires_at) == (2, Presence.PRESENT, 9)
    assert head.remembers("e1") and head.remembers("e2") and not head.remembers("e3")


@settings(max_examples=200, deadline=None)
@given(event_sets(users=1))
def test_any_reachable_state_round_trips(events: list[dict[str, Any]]) -> None:
    state = UserState()
    for body in events:
        state = profile.apply(state, parse_event(json.dumps(body)))
    item = to_item("u", state, rev=1, recent_events=(), expires_at=None)
    assert from_item(item) == state
    assert set(item) <= SIGN_ONLY | {format2.DATA}


def test_a_format_1_record_reads_to_the_state_format_2_would_hold() -> None:
    """0.4's layout: one attribute per claim, stamps ending in the full event id."""
    state = _state()
    old_stamps = _with_event_ids(state)
    recent = ("e0", "e 1\t1:AQIDBAUGBwg")  # a bare id (before digests); one with a digest
    item = format1.to_item("u", old_stamps, rev=4, recent_events=recent, expires_at=None)
    assert from_item(item) == state
    head = read_head(item)
    assert (head.format, head.rev, head.presence) == (1, 4, Presence.PRESENT)
    assert head.remembers("e0") and head.remembers("e 1")
    assert head.recent_events[0].content is None
    assert head.recent_events[1].content == DIGEST_OF_FORMAT_1


DIGEST_OF_FORMAT_1 = profile.Digest(1, b"\x01\x02\x03\x04")  # 32 of the 64 bits


def _with_event_ids(state: UserState) -> UserState:
    """The state as format 1 held it: stamps "<time>|<event id>" (ids from _state)."""
    ids = {profile.tie_break(e): e for e in ("e1", "e2")}

    def old(stamp: str) -> str:
        when, _, tie = stamp.partition("|")
        return f"{when}|{ids[tie]}" if stamp else stamp

    return UserState(
        state.presence,
        old(state.presence_stamp),
        {k: old(v) for k, v in state.resets.items()},
        {p: profile.Entry(old(e.stamp), e.value) for p, e in state.entries.items()},
    )


def test_personal_values_only_in_attributes_that_get_encrypted() -> None:
    item = to_item("u", _state(), rev=1, recent_events=RECENT, expires_at=None)
    plaintext = repr({k: v for k, v in item.items() if k in SIGN_ONLY})
    for value in PERSONAL:
        assert value not in plaintext
    assert set(item) - SIGN_ONLY == {format2.DATA}
    # and the encrypted side really carries them (so the check above means something)
    carried = repr(format2.unpack_data(item[format2.DATA]["B"], Presence.PRESENT))
    assert all(value in carried for value in PERSONAL)


def test_the_typical_profile_packs_small() -> None:
    """Format 2's point: bookkeeping and data in a few hundred bytes (sealed sizes are measured
    on an emulator in tests/integration/test_record_format.py and by the benchmark)."""
    item = to_item("u", _state(), rev=1, recent_events=RECENT * 8, expires_at=None)
    assert len(item["h"]["B"]) == 1 + 1 + 16 * 12
    assert len(item["d"]["B"]) < 200


@pytest.mark.parametrize(
    "change",
    [
        {"rev": {"S": "one"}},
        {"format": {"N": "3"}},
        {"h": {"B": b"\x07"}},  # no such presence
        {"h": {"B": b"\x01\x01" + bytes(11)}},  # a remembered event cut short
        {"h": {"S": "text"}},
    ],
)
def test_malformed_bookkeeping_is_refused_as_tampering(change: dict[str, Any]) -> None:
    item = to_item("u", _state(), rev=1, recent_events=(), expires_at=None)
    with pytest.raises(RecordTampered):
        read_head({**item, **change})


@pytest.mark.parametrize(
    "data",
    [b"", b"\x02", b"\x01not deflate", b"\x00\x05", b"\x00\x00\x00\x00\x00\xff"],
)
def test_malformed_data_is_refused_as_tampering(data: bytes) -> None:
    item = to_item("u", _state(), rev=1, recent_events=(), expires_at=None)
    with pytest.raises(RecordTampered):
        from_item({**item, "d": {"B": data}})


def test_an_attribute_format_2_does_not_have_is_refused() -> None:
    item = to_item("u", _state(), rev=1, recent_events=(), expires_at=None)
    with pytest.raises(RecordTampered):
        from_item({**item, "email": {"S": '"x@example.org"'}})


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


@pytest.mark.parametrize("name", ["reset", "presence"])
@pytest.mark.parametrize(
    ("at", "tampered"),
    [
        (NOW - timedelta(days=3), False),
        (NOW + SKEW, False),  # the latest an event may be dated
        (NOW + SKEW + timedelta(microseconds=1), True),
        (datetime(2999, 1, 1, tzinfo=UTC), True),
    ],
)
def test_a_stored_stamp_beyond_the_clock_skew_is_tampering(
    name: str, at: datetime, tampered: bool
) -> None:
    state = _state()
    stamp = profile.stamp_of(at, "x")
    if name == "reset":
        state.resets[profile.ROOT] = stamp
    else:
        state.presence_stamp = stamp
    stored = from_item(to_item("u", state, rev=1, recent_events=(), expires_at=None))
    if tampered:
        with pytest.raises(RecordTampered, match=name) as raised:
            check_stamps(stored, NOW, SKEW)
        assert stamp not in raised.value.reason
    else:
        check_stamps(stored, NOW, SKEW)
