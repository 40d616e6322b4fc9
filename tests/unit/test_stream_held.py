"""HeldLease on the in-memory lease store: renewals, checkpoints, hand-off and loss, no loop."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fakes.streams import FakeClock, MemoryLeases
from userstore.worker.errors import AwsUnavailable
from userstore.worker.streams import Lease, LeaseLost, StreamConfig
from userstore.worker.streams.held import HeldLease

CONFIG = StreamConfig(lease_duration_s=30, renew_every_s=10, retry_base_s=0.001, retry_max_s=0.01)
AT = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


class FlakyLeases(MemoryLeases):
    """Renewals fail with AwsUnavailable `failing` times first."""

    def __init__(self) -> None:
        super().__init__(CONFIG.lease_duration_s)
        self.failing = 0

    async def renew(
        self,
        lease: Lease,
        now_ms: int,
        *,
        checkpoint: str | None = None,
        last_record_at: datetime | None = None,
    ) -> Lease:
        if self.failing:
            self.failing -= 1
            raise AwsUnavailable("UpdateItem failed (ThrottlingException)")
        return await super().renew(
            lease, now_ms, checkpoint=checkpoint, last_record_at=last_record_at
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def leases() -> FlakyLeases:
    return FlakyLeases()


async def hold(leases: MemoryLeases, clock: FakeClock, worker_id: str = "a") -> HeldLease:
    lease = await leases.acquire("S", worker_id, round(clock() * 1000))
    assert lease is not None
    return HeldLease(
        lease, leases, worker_id=worker_id, config=CONFIG, clock=clock, taken_at_s=clock()
    )


async def test_a_renewal_carries_the_checkpoint_not_yet_written(
    leases: FlakyLeases, clock: FakeClock
) -> None:
    held = await hold(leases, clock)
    held.unsaved = ("17", AT)
    clock.advance(10)
    await held.renew()
    assert (leases.items["S"].checkpoint, leases.items["S"].last_record_at) == ("17", AT)
    assert held.unsaved is None
    assert held.saved_at_s == clock()
    clock.advance(CONFIG.lease_duration_s - 1)
    assert not held.lapsed  # valid for a lease duration from the renewal
    clock.advance(1)
    assert held.lapsed


async def test_a_renewal_that_finds_a_handoff_request_tells_the_reader_to_finish(
    leases: FlakyLeases, clock: FakeClock
) -> None:
    held = await hold(leases, clock)
    assert await leases.request_handoff(held.lease, "b", round(clock() * 1000))
    await held.renew()
    assert held.handoff
    assert held.stop.is_set()
    assert not held.lost


async def test_a_renewal_that_finds_the_lease_taken_loses_it(
    leases: FlakyLeases, clock: FakeClock
) -> None:
    held = await hold(leases, clock)
    clock.advance(CONFIG.lease_duration_s + 1)
    assert await leases.acquire("S", "b", round(clock() * 1000)) is not None
    await held.renew()
    assert held.lost
    assert held.stop.is_set()
    assert not await held.checkpoint("17", AT)  # nothing is written once lost
    assert leases.items["S"].checkpoint is None


async def test_a_failed_renewal_changes_nothing(leases: FlakyLeases, clock: FakeClock) -> None:
    held = await hold(leases, clock)
    held.unsaved = ("17", AT)
    leases.failing = 1
    await held.renew()
    assert held.unsaved == ("17", AT)
    assert not (held.lost or held.stop.is_set())


async def test_a_checkpoint_is_retried_while_the_lease_is_valid(
    leases: FlakyLeases, clock: FakeClock
) -> None:
    held = await hold(leases, clock)
    leases.failing = 3
    assert await held.checkpoint("17", AT)
    assert leases.items["S"].checkpoint == "17"
    assert leases.failing == 0


async def test_a_checkpoint_failing_past_the_lease_loses_it(
    leases: FlakyLeases, clock: FakeClock
) -> None:
    held = await hold(leases, clock)
    leases.failing = 1
    clock.advance(CONFIG.lease_duration_s)
    assert not await held.checkpoint("17", AT)
    assert held.lost
    assert leases.items["S"].checkpoint is None


async def test_release_keeps_the_checkpoint_and_a_lost_lease_is_left_to_expire(
    leases: FlakyLeases, clock: FakeClock
) -> None:
    held = await hold(leases, clock)
    assert await held.checkpoint("17", AT)
    await held.release()
    assert (leases.items["S"].owner, leases.items["S"].checkpoint) == (None, "17")
    with pytest.raises(LeaseLost):  # the store refuses a second release...
        await leases.release(held.lease, round(clock() * 1000))
    await held.release()  # ...which HeldLease logs and leaves to expire
