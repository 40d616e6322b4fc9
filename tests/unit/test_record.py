"""The item layout: round trips, and what is (not) in plaintext. No AWS, no crypto."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from userstore.events import parse_event
from userstore.worker import profile
from userstore.worker.errors import RecordTampered
from userstore.worker.profile import UserState
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


def test_item_round_trips_to_the_same_state() -> None:
    state = _state()
    item = to_item(
        "urn:fdc:gov.uk:2022:AbC-123", state, rev=3, recent_events=("e1", "e2"), expires_at=None
    )
    assert from_item(item) == state
    head = read_head({**item, "key_ref": {"S": "kms:arn"}})
    assert (head.rev, head.recent_events, head.key_ref) == (3, ("e1", "e2"), "kms:arn")


def test_event_ids_drop_the_digests_and_read_older_bare_ids() -> None:
    recent = (
        "e0",
        "e 1\t1:AAAAAAAAAAA",
    )  # remembered before digests; with one (ids may hold spaces)
    item = to_item("u", _state(), rev=1, recent_events=recent, expires_at=None)
    head = read_head(item)
    assert head.recent_events == recent
    assert head.event_ids == ("e0", "e 1")


def test_personal_values_only_in_attributes_that_get_encrypted() -> None:
    item = to_item("u", _state(), rev=1, recent_events=("e1",), expires_at=None)
    plaintext = json.dumps({k: v for k, v in item.items() if k in SIGN_ONLY})
    for value in PERSONAL:
        assert value not in plaintext
    # and the encrypted side really carries them (so the check above means something)
    assert all(any(v in json.dumps(a) for a in item.values()) for v in PERSONAL)


def test_malformed_bookkeeping_is_refused_as_tampering() -> None:
    item = to_item("u", _state(), rev=1, recent_events=(), expires_at=None)
    item["rev"] = {"S": "one"}
    with pytest.raises(RecordTampered):
        read_head(item)


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


@pytest.mark.parametrize("name", ["reset_stamp", "presence_stamp"])
@pytest.mark.parametrize(
    ("stamp", "tampered"),
    [
        ("", False),  # never created or deleted
        (profile.stamp_of(NOW - timedelta(days=3), "e1"), False),
        (profile.stamp_of(NOW + SKEW, "~~~"), False),  # the latest an event may be dated
        (profile.stamp_of(NOW + SKEW + timedelta(microseconds=1), "e1"), True),
        ("2999-01-01T00:00:00.000000Z|x", True),
        ("zzz", True),  # not a stamp, and sorts after every one
    ],
)
def test_a_stored_stamp_beyond_the_clock_skew_is_tampering(
    name: str, stamp: str, tampered: bool
) -> None:
    item = to_item("u", _state(), rev=1, recent_events=(), expires_at=None)
    item[name] = {"S": stamp}
    head = read_head(item)
    if tampered:
        with pytest.raises(RecordTampered, match=name) as raised:
            check_stamps(head, NOW, SKEW)
        assert stamp not in raised.value.reason
    else:
        check_stamps(head, NOW, SKEW)
