"""bench.units and bench.measures: DynamoDB's unit rules applied to a leg's items (pure)."""

from __future__ import annotations

import pytest

from bench.measures import BurstRun, LatencyRun
from bench.units import LegUnits, mean_read_units, replacing_write_units, sizes_by_key


def test_items_are_sized_by_their_key_with_binary_as_raw_bytes() -> None:
    items = [
        {"user_id": {"S": "u1"}, "blob": {"B": b"\x00" * 1000}},
        {"other": {"S": "no user id: not a record"}},
    ]
    # "user_id" (7) + "u1" (2) + "blob" (4) + 1000 raw bytes.
    assert sizes_by_key(items) == {"u1": 1013}


def test_a_replacing_write_costs_the_larger_of_the_old_and_new_item() -> None:
    before = {"shrunk": 2100, "deleted": 1500}
    after = {"shrunk": 900, "created": 1025}
    # shrunk: 2100 B -> 3 units; deleted: 1500 B -> 2; created: 1025 B -> 2.
    assert replacing_write_units(before, after) == pytest.approx((3 + 2 + 2) / 3)
    assert replacing_write_units({}, {}) == 0.0


def test_reads_round_up_per_4_kb_and_an_absent_item_costs_the_minimum() -> None:
    assert mean_read_units({"a": 4096, "b": 4097}, ["a", "b", "absent"]) == pytest.approx(
        (1 + 2 + 1) / 3
    )


def test_a_leg_adds_record_writes_other_writes_and_reads_per_event() -> None:
    leg = LegUnits(
        record_writes=1.0,
        other_writes=2.0,
        record_reads=0.5,
        before={"u": 3000},
        after={"u": 1000},
        other_item_bytes=300,
    )
    assert leg.write_units() == pytest.approx(1 * 3 + 2 * 1)
    assert leg.read_units() == pytest.approx(0.5 * 1)


def test_latency_percentiles_and_events_never_applied() -> None:
    run = LatencyRun("single", events=101, publish_seconds=2.0, latencies_ms=[*range(100)])
    assert run.p(0.5) == 50
    assert run.p(0.99) == 99
    assert run.missing == 1
    assert run.rate == pytest.approx(50.5)
    assert LatencyRun("burst", events=0, publish_seconds=0.0).p(0.99) is None


def test_a_bursts_longest_pause_is_between_consecutive_applied_events() -> None:
    run = BurstRun(4, 4, 25.0, 60.0, applied_at=[10.0, 30.5, 10.2, 10.4])
    assert run.longest_pause_s == pytest.approx(20.1)
    assert BurstRun(1, 1, 1.0, 60.0, applied_at=[5.0]).longest_pause_s is None
