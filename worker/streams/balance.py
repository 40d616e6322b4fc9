"""Pure: which leases this replica should take, and whose lease it should ask for.

Fair share: a replica works on at most ceil(readable shards / live workers) shards, where live
workers are the distinct owners of unexpired leases, the replicas with a pending hand-off request
(they hold nothing yet but want work), and itself. It takes free shards (no owner, an expired
lease, or a lease already its own) up to that share, in listing order.

A replica that started late finds every shard taken by someone holding more than a fair share.
It never takes a valid lease by force (two replicas would then read the same records at once);
it asks instead: it writes its name into one lease of the most loaded owner (`handoff_to`). That
owner sees the request when it next renews, finishes and checkpoints the batch in hand, and
releases the lease; for `request_ttl_ms` no one but the requester may take it. One request per
replica at a time.

No I/O and no clock; tested by table in tests/unit/test_stream_lineage.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Lease:
    """One shard's lease item, as read from (or written to) the lease table."""

    shard_id: str
    owner: str | None
    counter: int
    expires_at_ms: int
    checkpoint: str | None = None
    last_record_at: datetime | None = None
    handoff_to: str | None = None
    handoff_at_ms: int = 0

    def alive(self, now_ms: int) -> bool:
        """Owned and unexpired: nobody else may take it."""
        return self.owner is not None and self.expires_at_ms > now_ms

    def requested(self, now_ms: int, request_ttl_ms: int) -> bool:
        """Someone asked for this lease recently enough that the request still stands."""
        return self.handoff_to is not None and self.handoff_at_ms + request_ttl_ms > now_ms

    def handoff_requested(self, me: str, now_ms: int, request_ttl_ms: int) -> bool:
        """The owner `me` should finish its batch and release this lease to the requester."""
        return self.requested(now_ms, request_ttl_ms) and self.handoff_to != me


@dataclass(frozen=True)
class Plan:
    """What to do this round: take `acquire` (in order), ask for `request` (or nothing)."""

    acquire: tuple[str, ...]
    request: Lease | None
    target: int


def fair_share(shard_count: int, live_workers: int) -> int:
    return -(-shard_count // max(1, live_workers))


def plan(
    ready: Sequence[str],
    leases: Mapping[str, Lease],
    *,
    me: str,
    held: Collection[str],
    now_ms: int,
    request_ttl_ms: int,
) -> Plan:
    """Decide the round for replica `me`, which holds `held`, given the readable shards."""
    current = [lease for shard_id in ready if (lease := leases.get(shard_id)) is not None]
    live = (
        {me}
        | {lease.owner for lease in current if lease.owner and lease.alive(now_ms)}
        | {
            lease.handoff_to
            for lease in current
            if lease.handoff_to and lease.requested(now_ms, request_ttl_ms)
        }
    )
    target = fair_share(len(ready), len(live))
    mine = sum(1 for shard_id in ready if shard_id in held)

    def free(shard_id: str) -> bool:
        lease = leases.get(shard_id)
        if shard_id in held:
            return False
        if lease is None:
            return True
        if lease.alive(now_ms) and lease.owner != me:
            return False
        return not lease.requested(now_ms, request_ttl_ms) or lease.handoff_to == me

    acquire = tuple([shard_id for shard_id in ready if free(shard_id)][: max(0, target - mine)])
    if mine + len(acquire) >= target:
        return Plan(acquire, None, target)
    if any(
        lease.handoff_to == me and lease.requested(now_ms, request_ttl_ms) and lease.alive(now_ms)
        for lease in current
        if lease.shard_id not in held
    ):
        return Plan(acquire, None, target)  # one request at a time: wait for the owner
    loads = Counter(
        lease.owner
        for lease in current
        if lease.owner and lease.owner != me and lease.alive(now_ms)
    )
    over = sorted((-count, owner) for owner, count in loads.items() if count > target)
    if not over:
        return Plan(acquire, None, target)
    busiest = over[0][1]
    candidates = [
        lease
        for lease in current
        if lease.owner == busiest
        and lease.alive(now_ms)
        and not lease.requested(now_ms, request_ttl_ms)
    ]
    return Plan(acquire, candidates[-1] if candidates else None, target)
