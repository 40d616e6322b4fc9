"""bench.report_costs: the cost targets' lines, computed from a run's measures (pure)."""

from __future__ import annotations

from collections import Counter

from bench.measures import BurstRun, LatencyRun, RecordSizes
from bench.report import Results, targets
from bench.report_costs import BURST_BEFORE_S, leg_units
from bench.subjects import Window


def lines(results: Results) -> dict[str, tuple[str, bool | None]]:
    return {t.name: (t.measured, t.met) for t in targets(results)}


def find(found: dict[str, tuple[str, bool | None]], start: str) -> tuple[str, bool | None]:
    (name,) = [n for n in found if n.startswith(start)]
    return found[name]


def test_record_size_targets_take_the_largest_record() -> None:
    results = Results(command="test")
    results.record_sizes = {
        "cached": RecordSizes(
            2, 100, 350, after_create={"a": 1000, "b": 1024}, steady={"a": 900, "b": 1025}
        ),
        "kms": RecordSizes(2, 100, 350, after_create={"a": 1400}, steady={"a": 1536}),
    }
    found = lines(results)
    measured, met = find(found, "cached: steady-state record")
    assert met is False and "max 1,025 B" in measured and "2 write units" in measured
    assert find(found, "kms: steady-state record")[1] is True
    assert find(found, "cached: a create")[1] is True  # 1,024 B is still one unit


def burst(drain_s: float | None, puts: int, gdk: int) -> BurstRun:
    calls = Counter({"dynamodb:PutItem": puts, "kms:GenerateDataKey": gdk, "kms:Decrypt": gdk})
    return BurstRun(61, 61 if drain_s else 30, drain_s, 120.0, [], calls)


def test_burst_targets_count_writes_and_data_keys_and_compare_with_before() -> None:
    results = Results(command="test")
    results.bursts = {
        "kms": burst(BURST_BEFORE_S["kms"] / 12, puts=7, gdk=7),
        "cached": burst(BURST_BEFORE_S["cached"] / 10, puts=8, gdk=0),
    }
    found = lines(results)
    assert find(found, "61-event burst of one user")[1] is True
    measured, met = find(found, "61-event burst drained")
    assert met is True and "12.0x" in measured
    results.bursts["kms"] = burst(None, puts=9, gdk=9)  # not drained, too many writes
    found = lines(results)
    assert find(found, "61-event burst of one user")[1] is False
    measured, met = find(found, "61-event burst drained")
    assert met is False and "not drained: 30 of 61" in measured


def paced(shape: str, p99: float, apply_seconds: float = 2.5) -> LatencyRun:
    return LatencyRun(shape, 100, 2.5, [1.0] * 98 + [p99, p99], apply_seconds=apply_seconds)


def test_burst_latency_target_is_three_times_the_single_p99_per_mode() -> None:
    results = Results(command="test")
    results.latency = {
        "kms": [paced("single", 100.0), paced("burst", 300.0)],
        "cached": [paced("single", 100.0), paced("burst", 301.0)],
    }
    measured, met = find(lines(results), "10 users a second")
    assert met is False
    assert "kms 300 / 100 ms = 3.0x" in measured and "cached 301 / 100 ms = 3.0x" in measured
    results.latency.pop("cached")
    assert find(lines(results), "10 users a second")[1] is True


def test_latency_is_not_assessed_where_single_events_fell_behind_the_published_rate() -> None:
    results = Results(command="test")
    # 100 events published in 2.5 s (40/s) but applied over 4 s (25/s): a growing backlog.
    results.latency = {"cached": [paced("single", 100.0, 4.0), paced("burst", 200.0)]}
    measured, met = find(lines(results), "10 users a second")
    assert met is None and "cached not assessed" in measured
    # A failure where it was assessed still fails the target.
    results.latency["kms"] = [paced("single", 100.0), paced("burst", 400.0)]
    assert find(lines(results), "10 users a second")[1] is False


def test_bursts_falling_behind_fail_the_target_rather_than_escape_it() -> None:
    results = Results(command="test")
    results.latency = {"cached": [paced("single", 100.0), paced("burst", 900.0, 6.0)]}
    measured, met = find(lines(results), "10 users a second")
    assert met is False and "9.0x" in measured


def test_a_run_without_cost_legs_has_no_cost_targets() -> None:
    assert targets(Results(command="test")) == []


def test_userstore_record_writes_come_from_revisions_and_others_from_the_whole_leg() -> None:
    results = Results(command="test")
    # The window saw 30 of 40 events and only 20 PutItem (the first writes came before it).
    window = Window(events=30, seconds=1.0, cpu_s=0.1, calls=Counter({"dynamodb:PutItem": 20}))
    window.leg_calls, window.leg_events = Counter({"dynamodb:PutItem": 41}), 40
    for system in ("userstore", "naive"):
        results.kinds[(system, "cached", "create")] = window
        results.kind_sizes[(system, "cached", "create")] = {f"u{n}": 2000 for n in range(40)}
    results.record_writes[("userstore", "cached", "create")] = 40
    userstore = leg_units(results, "userstore", "cached", "create")
    assert userstore is not None
    assert userstore.record_writes == 1.0  # 40 revisions over 40 events, not 20 / 30
    assert userstore.write_units() == 2.0 and userstore.read_units() == 1.0
    naive = leg_units(results, "naive", "cached", "create")
    assert naive is not None and naive.record_writes == 41 / 40
