"""The item layout: round trips, and what is (not) in plaintext. No AWS, no crypto."""

from __future__ import annotations

import json

import pytest

from events import parse_event
from worker import profile
from worker.errors import RecordTampered
from worker.profile import UserState
from worker.record import SIGN_ONLY, from_item, read_head, to_item

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
