"""The shard reader's pure decisions: where a new iterator starts, how long to back off."""

from __future__ import annotations

import pytest

from userstore.worker.streams import StreamConfig
from userstore.worker.streams.reader import start_after


@pytest.mark.parametrize(
    ("checkpoint", "unsaved", "from_horizon", "expected"),
    [
        (None, None, False, None),  # never read: the trim horizon
        ("10", None, False, "10"),  # after the checkpoint written
        ("10", "17", False, "17"),  # after what was handled, written or not
        (None, "17", False, "17"),
        ("10", None, True, None),  # the checkpoint was trimmed: the trim horizon
        ("10", "17", True, None),
    ],
)
def test_a_new_iterator_starts_after_the_last_record_handled(
    checkpoint: str | None, unsaved: str | None, from_horizon: bool, expected: str | None
) -> None:
    assert start_after(checkpoint, unsaved, from_horizon) == expected


CONFIG = StreamConfig(retry_base_s=1.0, retry_max_s=8.0)


@pytest.mark.parametrize(
    ("attempt", "step"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (10_000, 8.0)],
)
def test_backoff_doubles_to_the_cap_with_jitter_in_the_upper_half(
    attempt: int, step: float
) -> None:
    assert CONFIG.backoff_s(attempt, lambda low, high: low) == step / 2
    assert CONFIG.backoff_s(attempt, lambda low, high: high) == step
    assert step / 2 <= CONFIG.backoff_s(attempt) <= step
