"""One contract for the users-table and state-table ports, run on the adapters over moto and on
the in-memory fakes the unit tests use, so the fakes can't drift from the adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import make_settings, provision_settings
from tests.fakes.tables import MemorySweepState, MemoryUsersTable
from userstore.worker.adapters.state_table import StateTable
from userstore.worker.adapters.users_table import UsersTable
from userstore.worker.app import aws_clients
from userstore.worker.ports import Checkpoint, SweepCounts, SweepState
from userstore.worker.ports import UsersTable as UsersTablePort
from userstore.worker.record import Item

pytestmark = pytest.mark.integration


@dataclass
class Tables:
    users: UsersTablePort
    state: SweepState


@pytest.fixture(params=["moto", "memory"])
async def tables(request: pytest.FixtureRequest) -> AsyncIterator[Tables]:
    if request.param == "memory":
        yield Tables(MemoryUsersTable(), MemorySweepState())
        return
    settings = await provision_settings(make_settings(request.getfixturevalue("moto_endpoint")))
    async with aws_clients(settings) as clients:
        yield Tables(
            UsersTable(clients.dynamodb, settings.table, max_attempts=3),
            StateTable(clients.dynamodb, settings.state_table, max_attempts=3),
        )


def item(user_id: str, rev: int, token: str | None = None, **extra: Any) -> Item:
    made: Item = {"user_id": {"S": user_id}, "rev": {"N": str(rev)}, **extra}
    if token is not None:
        made["email_idx"] = {"S": token}
    return made


async def test_puts_are_conditioned_on_the_revision(tables: Tables) -> None:
    users = tables.users
    assert await users.get("u-1") is None
    assert (await users.put(item("u-1", 1), expected_rev=None)).written
    lost = await users.put(item("u-1", 1, note={"S": "late"}), expected_rev=None)
    assert not lost.written and lost.current is not None
    assert lost.current.item == item("u-1", 1)  # the loser gets the winner's item
    assert (await users.put(item("u-1", 2), expected_rev=1)).written
    stale = await users.put(item("u-1", 2, note={"S": "stale"}), expected_rev=1)
    assert not stale.written and stale.current is not None and stale.current.head.rev == 2
    missing = await users.put(item("u-2", 5), expected_rev=4)
    assert not missing.written and missing.current is None
    record = await users.get("u-1")
    assert record is not None and (record.head.user_id, record.head.rev) == ("u-1", 2)


async def test_reads_many_scans_and_looks_up_tokens(tables: Tables) -> None:
    users = tables.users
    ids = [f"u-{n:02d}" for n in range(9)]
    for n, uid in enumerate(ids):
        assert (await users.put(item(uid, 1, f"1:t{n % 2}"), expected_rev=None)).written
    many = await users.get_many([*ids[:3], "u-none", ids[0]])
    assert set(many) == {*ids[:3], "u-none"} and many["u-none"] is None
    assert all(many[uid] is not None for uid in ids[:3])

    seen: list[str] = []
    for segment in range(2):
        start = None
        while True:
            page = await users.scan_page(segment, 2, limit=2, start=start)
            seen += [i["user_id"]["S"] for i in page.items]
            if page.last_key is None:
                break
            start = page.last_key
    assert sorted(seen) == ids  # every item once, across segments and resumed pages

    bookkept = [i["user_id"]["S"] async for p in users.scan_bookkeeping(0, 1) for i in p]
    assert sorted(bookkept) == ids
    assert await users.users_with_email_token("1:t1") == {ids[n] for n in range(1, 9, 2)}
    assert await users.users_with_email_token("1:none") == set()


async def test_the_sweep_lease_and_checkpoints(tables: Tables) -> None:
    state = tables.state
    assert await state.take_lease("job", "a", now_s=1000.0, lease_s=30)
    assert not await state.take_lease("job", "b", now_s=1010.0, lease_s=30)
    assert await state.take_lease("job", "a", now_s=1020.0, lease_s=30)  # renewed
    assert await state.take_lease("job", "b", now_s=1051.0, lease_s=30)  # a's lapsed
    await state.release_lease("job")
    assert await state.take_lease("job", "c", now_s=1052.0, lease_s=30)

    assert await state.load("job", 0) == Checkpoint()
    saved = Checkpoint(
        last_key={"user_id": {"S": "u-07"}},
        done=False,
        counts=SweepCounts(scanned=5, resealed=3, current=1, skipped=0, failed=1),
        failed_ids=["u-03"],
    )
    await state.save("job", 0, saved)
    await state.save("job", 1, Checkpoint(done=True))
    assert await state.load("job", 0) == saved
    assert await state.load("job", 1) == Checkpoint(done=True)
    await state.forget("job", 2)
    assert await state.load("job", 0) == Checkpoint()
