"""The users table and the sweep's state in memory, with the adapters' conditions.

MemoryUsersTable implements `worker.ports.UsersTable`: conditional puts on `rev` (a losing put
returns the winner's item, as ReturnValuesOnConditionCheckFailure=ALL_OLD does), segmented
scans with a resumable position, the email-token lookup. A test can make the next puts lose to
a concurrent writer (`before_put`) and count calls. MemorySweepState implements
`worker.ports.SweepState` (the lease's owner and expiry, one checkpoint per segment).
"""

from __future__ import annotations

import copy
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from userstore.worker.ports import Checkpoint, PutResult, ScanPage, StoredRecord
from userstore.worker.record import EMAIL_INDEX, PARTITION_KEY, Item, read_head


def _stored(item: Item | None) -> StoredRecord | None:
    return None if item is None else StoredRecord(copy.deepcopy(item), read_head(item))


class MemoryUsersTable:
    def __init__(self, table: str = "users") -> None:
        self._table = table
        self.items: dict[str, Item] = {}
        self.calls: Counter[str] = Counter()
        # Awaited before each put's condition is checked: a test writes "concurrently" here.
        self.before_put: Callable[[Item], Awaitable[None]] | None = None

    @property
    def table(self) -> str:
        return self._table

    def rev(self, user_id: str) -> int | None:
        item = self.items.get(user_id)
        return None if item is None else int(item["rev"]["N"])

    async def get(self, user_id: str) -> StoredRecord | None:
        self.calls["get"] += 1
        return _stored(self.items.get(user_id))

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, StoredRecord | None]:
        self.calls["get_many"] += 1
        return {uid: _stored(self.items.get(uid)) for uid in sorted(set(user_ids))}

    async def put(self, item: Item, *, expected_rev: int | None) -> PutResult:
        self.calls["put"] += 1
        if self.before_put is not None:
            hook, self.before_put = self.before_put, None
            await hook(item)
        uid = item[PARTITION_KEY]["S"]
        if self.rev(uid) != expected_rev:
            return PutResult(False, _stored(self.items.get(uid)))
        self.items[uid] = copy.deepcopy(item)
        return PutResult(True)

    async def scan_page(
        self, segment: int, segments: int, *, limit: int, start: dict[str, Any] | None
    ) -> ScanPage:
        self.calls["scan"] += 1
        ids = sorted(uid for uid in self.items if zlib.crc32(uid.encode()) % segments == segment)
        if start is not None:
            ids = [uid for uid in ids if uid > start[PARTITION_KEY]["S"]]
        page = ids[:limit]
        more = len(ids) > limit
        last = {PARTITION_KEY: {"S": page[-1]}} if more and page else None
        return ScanPage([copy.deepcopy(self.items[uid]) for uid in page], last)

    async def scan_bookkeeping(self, segment: int, segments: int) -> AsyncIterator[list[Item]]:
        page = await self.scan_page(segment, segments, limit=len(self.items) + 1, start=None)
        yield page.items

    async def users_with_email_token(self, token: str) -> set[str]:
        return {
            uid for uid, item in self.items.items() if item.get(EMAIL_INDEX, {}).get("S") == token
        }

    async def approximate_count(self) -> int | None:
        return len(self.items)

    async def stream_arn(self) -> str | None:
        return None


@dataclass
class MemorySweepState:
    leases: dict[str, tuple[str, float]] = field(default_factory=dict)  # job -> owner, expiry
    checkpoints: dict[tuple[str, int], Checkpoint] = field(default_factory=dict)
    saves: int = 0

    async def take_lease(self, job: str, owner: str, *, now_s: float, lease_s: float) -> bool:
        held = self.leases.get(job)
        if held is not None and held[0] != owner and held[1] >= now_s:
            return False
        self.leases[job] = (owner, now_s + lease_s)
        return True

    async def release_lease(self, job: str) -> None:
        self.leases.pop(job, None)

    async def load(self, job: str, segment: int) -> Checkpoint:
        saved = self.checkpoints.get((job, segment))
        return Checkpoint() if saved is None else _copy(saved)

    async def save(self, job: str, segment: int, checkpoint: Checkpoint) -> None:
        self.saves += 1
        self.checkpoints[(job, segment)] = _copy(checkpoint)

    async def forget(self, job: str, segments: int) -> None:
        for segment in range(segments):
            self.checkpoints.pop((job, segment), None)


def _copy(checkpoint: Checkpoint) -> Checkpoint:
    return replace(
        checkpoint,
        counts=replace(checkpoint.counts),
        failed_ids=list(checkpoint.failed_ids),
        last_key=copy.deepcopy(checkpoint.last_key),
    )
