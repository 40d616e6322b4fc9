"""The re-encryption sweep on the in-memory tables and local keys: what it reseals, what it
leaves, how it resumes, and that it yields to another sweep's lease. No emulator."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.keys import LocalKeys, MemoryKeyService, kms_ref, local_cipher
from tests.fakes.tables import MemorySweepState, MemoryUsersTable
from userstore.events import parse_event
from userstore.worker import sweep
from userstore.worker.blind_index import EmailIndex, IndexKeys
from userstore.worker.crypto import ItemCipher
from userstore.worker.handlers import HandlerLimits, Outcome, UserEventHandler
from userstore.worker.record import KEY_REF
from userstore.worker.reseal import Resealed, Resealer, Target
from userstore.worker.settings import Settings
from userstore.worker.sweep import SweepBusy, job_id, run_sweep

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
OLD, NEW = kms_ref("old"), kms_ref("new")
USERS = [f"u-{n:02d}" for n in range(7)]


@dataclass
class Parts:
    """Exactly what a sweep is given (worker.sweep.SweepContext)."""

    settings: Settings
    keys: MemoryKeyService
    cipher: ItemCipher
    index: IndexKeys
    store: MemoryUsersTable
    state_table: MemorySweepState
    local_keys: LocalKeys


async def create(parts: Parts, user: str) -> None:
    limits = HandlerLimits(timedelta(days=30), timedelta(minutes=5), 3)
    handler = UserEventHandler(parts.store, parts.cipher, parts.index, limits, lambda: NOW)
    body = {
        "event_id": f"e-{user}",
        "type": "user.created",
        "user_id": user,
        "occurred_at": (NOW - timedelta(minutes=1)).isoformat(),
        "data": {"email": f"{user}@example.org"},
    }
    assert await handler.handle(parse_event(json.dumps(body))) is Outcome.APPLIED


def key_of(parts: Parts, user: str) -> str:
    return str(parts.store.items[user][KEY_REF]["S"])


@pytest.fixture
async def parts() -> Parts:
    """Records under OLD; then the alias moved to NEW (a rotation): every record is stale."""
    cipher, local = local_cipher(OLD)
    keys = MemoryKeyService(aliases={"alias/userstore": OLD})
    made = Parts(
        Settings(),
        keys,
        cipher,
        IndexKeys(EmailIndex({1: bytes(32)}, 1)),
        MemoryUsersTable(),
        MemorySweepState(),
        local,
    )
    for user in USERS:
        await create(made, user)
    keys.aliases["alias/userstore"] = NEW
    return made


async def test_stale_records_are_resealed_and_current_ones_left(parts: Parts) -> None:
    report = await run_sweep(parts, segments=2)
    assert report.done and report.ok and not report.resumed
    assert (report.counts.scanned, report.counts.resealed, report.counts.current) == (7, 7, 0)
    assert {key_of(parts, u) for u in USERS} == {str(NEW)}
    assert all(parts.store.rev(u) == 2 for u in USERS)  # content unchanged, revision moved on

    puts = parts.store.calls["put"]
    again = await run_sweep(parts, segments=2)
    assert (again.counts.resealed, again.counts.current) == (0, 7)
    assert parts.store.calls["put"] == puts  # nothing written for current records
    assert parts.state_table.leases == {}  # the lease is released


async def test_a_stopped_sweep_resumes_and_counts_each_record_once(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep, "_PAGE_SIZE", 2)
    stop = asyncio.Event()
    first = await run_sweep(parts, segments=1, stop=stop, on_scanned=lambda _: stop.set())
    assert not first.done
    assert first.this_run.scanned == 2
    assert sum(key_of(parts, u) == str(NEW) for u in USERS) == 2

    second = await run_sweep(parts, segments=1)
    assert second.done and second.resumed
    assert second.this_run.scanned == 5
    assert (second.counts.scanned, second.counts.resealed) == (7, 7)
    assert {key_of(parts, u) for u in USERS} == {str(NEW)}


async def test_busy_lease_means_no_work(parts: Parts) -> None:
    target_job = job_id(Target(NEW, 1), 4)
    parts.state_table.leases[target_job] = ("another-sweep", NOW.timestamp() * 2)
    with pytest.raises(SweepBusy):
        await run_sweep(parts, segments=4)
    assert parts.store.calls["put"] == len(USERS)  # only the creates
    assert parts.state_table.leases[target_job][0] == "another-sweep"


async def test_a_tampered_record_is_reported_not_rewritten(parts: Parts) -> None:
    item = parts.store.items["u-03"]
    item["d"] = {"B": bytes(reversed(item["d"]["B"]))}  # the encrypted data
    before = dict(item)
    report = await run_sweep(parts, segments=1)
    assert not report.ok
    assert report.failed_user_ids == ["u-03"]
    assert (report.counts.resealed, report.counts.failed) == (6, 1)
    assert parts.store.items["u-03"] == before


async def test_verify_opens_current_records_too(parts: Parts) -> None:
    await run_sweep(parts, segments=1)
    parts.local_keys.unavailable.add(NEW)  # opening anything now fails: KMS is down
    report = await run_sweep(parts, segments=1, verify=True)
    assert report.counts.failed == len(USERS)


async def test_a_concurrent_update_wins_and_the_reseal_decides_again(parts: Parts) -> None:
    """The update, sealed under the new key already, brought the record up to date: skipped."""
    await parts.cipher.activate(NEW)
    resealer = Resealer(parts.store, parts.cipher, parts.index, max_conflicts=3)
    stale = await parts.store.get("u-01")
    assert stale is not None and key_of(parts, "u-01") == str(OLD)

    async def an_update_lands_first(_: object) -> None:
        limits = HandlerLimits(timedelta(days=30), timedelta(minutes=5), 3)
        handler = UserEventHandler(parts.store, parts.cipher, parts.index, limits, lambda: NOW)
        body = {"event_id": "e-up", "type": "user.updated", "user_id": "u-01"}
        update = {**body, "occurred_at": NOW.isoformat(), "data": {"given_name": "Ann"}}
        assert await handler.handle(parse_event(json.dumps(update))) is Outcome.APPLIED

    parts.store.before_put = an_update_lands_first
    assert await resealer.reseal("u-01", Target(NEW, 1), stale) is Resealed.SKIPPED
    assert key_of(parts, "u-01") == str(NEW) and parts.store.rev("u-01") == 2
    assert await resealer.reseal("u-none", Target(NEW, 1)) is Resealed.MISSING
