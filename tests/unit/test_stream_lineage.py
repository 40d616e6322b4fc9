"""worker.streams.lineage and .balance: which shards may be read, which a replica takes.

Pure functions, table-tested: no AWS, no clock, no event loop.
"""

from __future__ import annotations

import pytest

from userstore.worker.streams.balance import Lease, fair_share, plan
from userstore.worker.streams.lineage import SHARD_END, Shard, readable

# A stream whose shard P split into A and B; A later rolled over into A2 (a chain).
SPLIT = [Shard("P"), Shard("A", "P"), Shard("B", "P"), Shard("A2", "A")]


@pytest.mark.parametrize(
    ("shards", "checkpoints", "expected"),
    [
        pytest.param([], {}, [], id="empty stream"),
        pytest.param([Shard("S")], {}, ["S"], id="one new shard"),
        pytest.param([Shard("S")], {"S": "123"}, ["S"], id="one shard in progress"),
        pytest.param([Shard("S")], {"S": SHARD_END}, [], id="one shard finished"),
        pytest.param(SPLIT, {}, ["P"], id="split: only the parent before it is read"),
        pytest.param(SPLIT, {"P": "99"}, ["P"], id="split: parent in progress holds children"),
        pytest.param(SPLIT, {"P": SHARD_END}, ["A", "B"], id="split: parent done, both children"),
        pytest.param(
            SPLIT, {"P": SHARD_END, "A": SHARD_END}, ["B", "A2"], id="chain: grandchild after A"
        ),
        pytest.param(
            SPLIT,
            {"P": SHARD_END, "A": SHARD_END, "B": SHARD_END, "A2": SHARD_END},
            [],
            id="everything finished",
        ),
        pytest.param(SPLIT[1:], {}, ["A", "B"], id="parent trimmed: children readable"),
        pytest.param(
            [Shard("A2", "A")], {"A": "5"}, ["A2"], id="parent trimmed though never finished"
        ),
        pytest.param(
            [Shard("A2", "A"), Shard("A", "P"), Shard("P")],
            {},
            ["P"],
            id="listing order does not matter",
        ),
        pytest.param(
            [Shard("C", "P"), Shard("P")],
            {"C": "7", "P": "5"},
            ["P"],
            id="a child checkpoint never unlocks it before the parent",
        ),
    ],
)
def test_readable(
    shards: list[Shard], checkpoints: dict[str, str | None], expected: list[str]
) -> None:
    assert readable(shards, checkpoints) == expected


@pytest.mark.parametrize(
    ("shards", "workers", "share"),
    [(0, 1, 0), (1, 1, 1), (1, 2, 1), (4, 2, 2), (3, 2, 2), (5, 3, 2), (4, 1, 4), (2, 5, 1)],
)
def test_fair_share_rounds_up(shards: int, workers: int, share: int) -> None:
    assert fair_share(shards, workers) == share


NOW = 1_000_000
TTL = 30_000
FOUR = ["s1", "s2", "s3", "s4"]


def lease(
    shard_id: str,
    owner: str | None,
    *,
    expires: int = NOW + 10_000,
    checkpoint: str | None = None,
    handoff_to: str | None = None,
    handoff_at: int = 0,
) -> Lease:
    return Lease(shard_id, owner, 1, expires, checkpoint, None, handoff_to, handoff_at)


def leases(*items: Lease) -> dict[str, Lease]:
    return {item.shard_id: item for item in items}


@pytest.mark.parametrize(
    ("current", "held", "acquire", "ask", "target"),
    [
        pytest.param({}, set(), FOUR, None, 4, id="alone: takes everything"),
        pytest.param(
            leases(lease("s1", "b"), lease("s2", "b")),
            set(),
            ["s3", "s4"],
            None,
            2,
            id="two live workers: half each",
        ),
        pytest.param(
            leases(lease("s1", "a"), lease("s2", "b")),
            {"s1"},
            ["s3"],
            None,
            2,
            id="tops up to the share, in listing order",
        ),
        pytest.param(
            leases(*(lease(s, "b", expires=NOW) for s in FOUR)),
            set(),
            FOUR,
            None,
            4,
            id="takeover: expired leases are free and their owner is not live",
        ),
        pytest.param(
            leases(lease("s1", None, checkpoint="9"), lease("s2", "a", expires=NOW - 1)),
            set(),
            FOUR,
            None,
            4,
            id="released and our own stale leases are free",
        ),
        pytest.param(
            leases(*(lease(s, "b") for s in FOUR)),
            set(),
            [],
            lease("s4", "b"),
            2,
            id="late starter asks the overloaded owner for one lease",
        ),
        pytest.param(
            leases(lease("s1", "b"), lease("s2", "b"), lease("s3", "a"), lease("s4", "a")),
            {"s3", "s4"},
            [],
            None,
            2,
            id="balanced: nothing to do",
        ),
        pytest.param(
            leases(lease("s1", "b"), lease("s2", "b"), lease("s3", "b"), lease("s4", "c")),
            set(),
            [],
            lease("s3", "b"),
            2,
            id="three workers, four shards: asks the one holding more than its share",
        ),
        pytest.param(
            leases(
                lease("s1", "b"),
                lease("s2", "b"),
                lease("s3", "b", handoff_to="a", handoff_at=NOW - 1),
                lease("s4", "b"),
            ),
            set(),
            [],
            None,
            2,
            id="one request at a time: waits for the owner",
        ),
        pytest.param(
            leases(
                lease("s1", "b"),
                lease("s2", "b"),
                lease("s3", None, handoff_to="a", handoff_at=NOW - 1),
                lease("s4", "b"),
            ),
            set(),
            ["s3"],
            lease("s4", "b"),
            2,
            id="the owner released on request: the requester takes it, still short: asks again",
        ),
        pytest.param(
            leases(
                lease("s1", "a"),
                lease("s2", "a"),
                lease("s3", None, handoff_to="c", handoff_at=NOW - 1),
                lease("s4", None),
            ),
            {"s1", "s2"},
            [],
            None,
            2,
            id="a requester counts as live and its released lease is reserved for it",
        ),
        pytest.param(
            leases(
                lease("s1", "b"),
                lease("s2", "b"),
                lease("s3", None, handoff_to="c", handoff_at=NOW - TTL),
                lease("s4", "b"),
            ),
            set(),
            ["s3"],
            lease("s4", "b"),
            2,
            id="a stale request reserves nothing",
        ),
        pytest.param(
            leases(lease("s1", "b"), lease("s2", "b"), lease("s3", "b")),
            set(),
            ["s4"],
            lease("s3", "b"),
            2,
            id="takes the free shard first, then asks for the rest of its share",
        ),
        pytest.param(
            leases(lease("s1", "b", checkpoint=SHARD_END)),
            set(),
            ["s2", "s3", "s4"],
            None,
            3,
            id="finished shards are not in the plan (the caller passes readable ones)",
        ),
    ],
)
def test_plan(
    current: dict[str, Lease],
    held: set[str],
    acquire: list[str],
    ask: Lease | None,
    target: int,
) -> None:
    ready = [s for s in FOUR if current.get(s, lease(s, None)).checkpoint != SHARD_END]
    decided = plan(ready, current, me="a", held=held, now_ms=NOW, request_ttl_ms=TTL)
    assert list(decided.acquire) == acquire
    assert decided.request == ask
    assert decided.target == target


def test_a_late_starter_converges_to_half_through_requests() -> None:
    """Simulate the hand-off protocol round by round: b holds all four, a starts late."""
    state = leases(*(lease(s, "b") for s in FOUR))
    for _ in range(4):
        held_a = {s for s, item in state.items() if item.owner == "a"}
        decided = plan(FOUR, state, me="a", held=held_a, now_ms=NOW, request_ttl_ms=TTL)
        for shard_id in decided.acquire:
            state[shard_id] = lease(shard_id, "a")
        if decided.request is not None:  # b sees the request at its next renewal and releases
            state[decided.request.shard_id] = lease(
                decided.request.shard_id, None, handoff_to="a", handoff_at=NOW
            )
    owners = sorted(item.owner or "" for item in state.values())
    assert owners == ["a", "a", "b", "b"]


def test_handoff_requested_only_for_others_and_while_fresh() -> None:
    asked = lease("s1", "b", handoff_to="a", handoff_at=NOW - 5)
    assert asked.handoff_requested("b", NOW, TTL)
    assert not asked.handoff_requested("a", NOW, TTL)
    assert not asked.handoff_requested("b", NOW + TTL, TTL)
    assert not lease("s1", "b").handoff_requested("b", NOW, TTL)
