"""UserEventHandler.handle_burst on the in-memory users table and the real ItemCipher over local
keys: a burst stores exactly what one-by-one handling stores, in one write, with one open and one
seal, and each event keeps its own outcome."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.factories import event_dict
from tests.harness.memory_world import KEYS, World, id_tags, memory_world
from tests.harness.model import expected_profiles
from tests.harness.strategies import deliveries, event_sets
from userstore.events import parse_event
from userstore.worker.errors import (
    AwsUnavailable,
    EventOutOfRange,
    InvalidResult,
    KeyUnavailable,
    UserstoreError,
)
from userstore.worker.handlers import Outcome
from userstore.worker.profile import Event

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # the strategies' events are dated that morning
USER = "urn:fdc:gov.uk:2022:user-0"  # the strategies' first user


def event(event_id: str, kind: str, minutes: float, data: Any = None) -> Event:
    """An event dated `minutes` after an hour before NOW."""
    body = event_dict(USER, kind, 60 * (minutes - 60), data, base=NOW, event_id=event_id)
    return parse_event(json.dumps(body))


CREATED = event("e-create", "user.created", 0, {"attributes": {f"a{i}": i for i in range(30)}})
RENAMED = event("e-rename", "user.updated", 10, {"given_name": "Grace"})
TOO_MANY = event("e-poison", "user.updated", 5, {"attributes": {f"b{i}": i for i in range(30)}})
VERIFIED = event("e-verify", "user.updated", 15, {"email_verified": True})


def world() -> World:
    return memory_world(NOW)


def same(result: Outcome | Exception) -> Any:
    """An outcome, or an error by class and reason (two raises are never the same object)."""
    if isinstance(result, UserstoreError):
        return (type(result).__name__, result.reason)
    return result


async def one_by_one(w: World, events: list[Event]) -> list[Any]:
    results: list[Any] = []
    for one in events:
        try:
            results.append(same(await w.handler.handle(one)))
        except UserstoreError as exc:
            results.append(same(exc))
    return results


async def in_bursts(w: World, events: list[Event], sizes: list[int]) -> list[Any]:
    results: list[Any] = []
    start = 0
    for size in [*sizes, len(events)]:
        burst = events[start : start + size]
        start += len(burst)
        if burst:
            results += [same(r) for r in await w.handler.handle_burst(burst)]
    return results


def delivery_in_bursts(
    data: st.DataObject, events: list[dict[str, Any]]
) -> tuple[list[Event], list[int]]:
    """A delivery order of the events (some repeated) and the sizes of its first bursts."""
    delivered = [parse_event(json.dumps(e)) for e in data.draw(deliveries(events))]
    return delivered, data.draw(st.lists(st.integers(1, 10), max_size=len(delivered)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_random_bursts_store_and_answer_what_one_by_one_handling_does(
    data: st.DataObject,
) -> None:
    events = data.draw(event_sets(max_events=14, users=1))
    delivered, sizes = delivery_in_bursts(data, events)
    reference, bursts = world(), world()
    expected = await one_by_one(reference, delivered)
    assert await in_bursts(bursts, delivered, sizes) == expected
    # The same state (stamps and all, not only the view) and the same bookkeeping (events
    # remembered in the same order, tombstone expiry, email token), in fewer writes.
    assert await bursts.state(USER) == await reference.state(USER)
    assert bursts.bookkeeping(USER) == reference.bookkeeping(USER)
    assert await bursts.view(USER) == expected_profiles(events)[USER]
    assert bursts.table.calls["put"] <= len(sizes) + 1  # at most a write per burst


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_the_stored_state_does_not_depend_on_order_nor_on_burst_boundaries(
    data: st.DataObject,
) -> None:
    events = data.draw(event_sets(max_events=14, users=1))
    states = []
    for _ in range(2):
        delivered, sizes = delivery_in_bursts(data, events)
        w = world()
        await in_bursts(w, delivered, sizes)
        states.append(await w.state(USER))
        assert await w.view(USER) == expected_profiles(events)[USER]
    assert states[0] == states[1]


async def test_a_burst_is_one_open_one_seal_and_one_write() -> None:
    w = world()
    await w.handler.handle(CREATED)
    w.keys.calls.clear()
    puts = w.table.calls["put"]
    updates = [event(f"e-{n}", "user.updated", 1 + n, {"family_name": f"F{n}"}) for n in range(9)]
    assert await w.handler.handle_burst(updates) == [Outcome.APPLIED] * 9
    assert (w.keys.calls, w.table.calls["put"] - puts) == (Counter(open=1, seal=1), 1)
    assert w.table.rev(USER) == 2
    assert (await w.view(USER))["family_name"] == "F8"


async def test_a_poison_event_is_refused_alone_and_the_others_apply() -> None:
    w = world()
    results = await w.handler.handle_burst([CREATED, TOO_MANY, RENAMED])
    assert results[0::2] == [Outcome.APPLIED, Outcome.APPLIED]
    assert isinstance(results[1], InvalidResult)
    assert "attributes" in results[1].reason
    assert w.table.calls["put"] == 1
    assert await w.view(USER) == {
        "attributes": {f"a{i}": i for i in range(30)},
        "given_name": "Grace",
    }
    assert w.remembered(USER) == id_tags("e-create", "e-rename")


async def test_duplicates_inside_a_burst_cost_nothing() -> None:
    w = world()
    results = await w.handler.handle_burst([CREATED, CREATED, RENAMED, CREATED, RENAMED])
    assert (
        results == [Outcome.APPLIED, Outcome.DUPLICATE, Outcome.APPLIED] + [Outcome.DUPLICATE] * 2
    )
    assert w.table.calls["put"] == 1
    w.keys.calls.clear()
    # A burst of events the record remembers: no open, no seal, no write.
    assert await w.handler.handle_burst([RENAMED, CREATED]) == [Outcome.DUPLICATE] * 2
    same_again = event("e-same", "user.updated", 3, {"given_name": "Grace"})
    assert await w.handler.handle_burst([same_again]) == [Outcome.UNCHANGED]
    assert w.table.calls["put"] == 1
    assert w.keys.calls == Counter(open=1)  # the unchanged event needed the data, once


async def test_events_out_of_range_are_refused_alone() -> None:
    w = world()
    late = event("e-late", "user.updated", -60 * 24 * 31, {"given_name": "Old"})
    results = await w.handler.handle_burst([CREATED, late, RENAMED])
    assert isinstance(results[1], EventOutOfRange)
    assert (results[0], results[2], w.table.calls["put"]) == (Outcome.APPLIED,) * 2 + (1,)


async def test_a_conflict_decides_the_whole_burst_again_on_the_new_record() -> None:
    w = world()
    await w.handler.handle(CREATED)
    concurrent = memory_world(NOW, w.table).handler  # another writer on the same table

    async def they_apply_the_rename_first(_: Any) -> None:
        assert await concurrent.handle(RENAMED) is Outcome.APPLIED

    w.table.before_put = they_apply_the_rename_first
    results = await w.handler.handle_burst([RENAMED, VERIFIED])
    # Decided again on their record: the rename is theirs now, a duplicate here.
    assert results == [Outcome.DUPLICATE, Outcome.APPLIED]
    assert w.table.calls["put"] == 1 + 3  # the create, ours lost, theirs, ours again
    assert w.remembered(USER) == id_tags("e-create", "e-rename", "e-verify")


async def test_a_failed_write_is_the_failure_of_every_event_it_would_have_applied() -> None:
    w = world()
    await w.handler.handle(CREATED)

    async def unavailable(_: Any) -> None:
        raise AwsUnavailable("injected")

    w.table.before_put = unavailable
    results = await w.handler.handle_burst([CREATED, RENAMED, TOO_MANY, VERIFIED])
    assert results[0] is Outcome.DUPLICATE
    assert isinstance(results[1], AwsUnavailable)
    assert results[1] is results[3]
    assert isinstance(results[2], InvalidResult)
    assert w.table.rev(USER) == 1


async def test_a_failed_open_is_the_failure_of_every_event_that_needed_it() -> None:
    w = world()
    await w.handler.handle(CREATED)
    KEYS.unavailable.add(KEYS.active_ref())
    try:
        results = await w.handler.handle_burst([RENAMED, CREATED, VERIFIED])
    finally:
        KEYS.unavailable.clear()
    assert isinstance(results[0], KeyUnavailable)
    assert results[1] is Outcome.DUPLICATE  # on the bookkeeping alone
    assert results[2] is results[0]
    assert w.keys.calls["open"] == 1  # tried once for the burst
    assert w.table.calls["put"] == 1
