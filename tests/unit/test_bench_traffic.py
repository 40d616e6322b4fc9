"""bench.traffic's events are valid under the event contract: otherwise the benchmark would
measure dead-lettering instead of applying."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from bench.traffic import create_data, history, update_data
from userstore.events import EVENT_ADAPTER, Profile, ProfilePatch


def test_the_typical_profile_holds_every_claim_a_four_line_address_and_two_attributes() -> None:
    profile = Profile.model_validate(create_data(7))
    assert set(profile.model_dump(exclude_none=True)) == set(Profile.model_fields)
    assert profile.address is not None and profile.address.street_address is not None
    assert profile.address.street_address.count("\n") == 3
    assert profile.attributes is not None and len(profile.attributes) == 2
    assert 300 <= len(json.dumps(create_data(7), separators=(",", ":"))) <= 420


def test_updates_touch_one_to_three_fields_and_are_valid_patches() -> None:
    rng = random.Random(1)
    for n in range(200):
        patch = update_data(rng, n)
        ProfilePatch.model_validate(patch)
        leaves = sum(len(v) if isinstance(v, dict) else 1 for v in patch.values())
        assert 1 <= leaves <= 3


def test_a_history_is_a_create_then_updates_in_time_order() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        EVENT_ADAPTER.validate_json(b) for b in history("u-1", 3, 100, random.Random(2), start)
    ]
    assert [str(e.type) for e in events[:2]] == ["user.created", "user.updated"]
    assert len({e.event_id for e in events}) == 100
    times = [e.occurred_at for e in events]
    assert times == sorted(times) and len(set(times)) == 100
