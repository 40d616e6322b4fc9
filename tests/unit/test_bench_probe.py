"""bench.probe's attribution of the slowest wake-ups: pure arithmetic, no processes."""

from __future__ import annotations

import pytest

from bench.probe import LagSample, tail_shares


def sample(late: float, loop: float, process: float) -> LagSample:
    return LagSample(late_ms=late, span_ms=10 + late, loop_cpu_ms=loop, process_cpu_ms=process)


def test_the_tail_is_split_into_loop_other_threads_and_off_cpu() -> None:
    on_time = [sample(0.1, 0.5, 0.5) for _ in range(99)]
    slow = sample(30.0, 8.0, 20.0)  # 40 ms: loop 8, other threads 12, not running 20
    shares = tail_shares([*on_time, slow])
    assert shares["tail_loop"] == pytest.approx(0.2)
    assert shares["tail_threads"] == pytest.approx(0.3)
    assert shares["tail_off_cpu"] == pytest.approx(0.5)


def test_only_the_slowest_percent_counts() -> None:
    busy_on_time = [sample(0.0, 10.0, 10.0) for _ in range(99)]  # loop ran the whole span
    starved = sample(50.0, 0.0, 0.0)  # late, and nothing of the process ran
    shares = tail_shares([*busy_on_time, starved])
    assert shares == {"tail_loop": 0.0, "tail_threads": 0.0, "tail_off_cpu": 1.0}


def test_cpu_beyond_the_span_is_capped_and_no_samples_give_none() -> None:
    # Two threads outside the GIL (C code) can use more CPU than wall time: shares stay in [0, 1].
    shares = tail_shares([sample(5.0, 15.0, 40.0)])
    assert shares == {"tail_loop": 1.0, "tail_threads": 1.0, "tail_off_cpu": 0.0}
    assert tail_shares([]) == {"tail_loop": None, "tail_threads": None, "tail_off_cpu": None}
