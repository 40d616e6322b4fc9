"""Shard leases and checkpoints: the protocol (its DynamoDB adapter is adapters.state_table).

One item per shard, key `lease_key` (S) = "<stream ARN>/<shard id>":

    stream_arn, shard_id    which shard (the table may serve several streams)
    owner                   worker id of the replica reading it; absent when free
    expires_at_ms (N)       the owner's clock at its last write + lease duration
    counter (N)             bumped by every write of the owner: a fencing token
    checkpoint              last sequence number handled, or SHARD_END; kept across owners
    last_record_at          ApproximateCreationDateTime of that record (ISO), for lag reports
    updated_at              ISO time of the last write
    handoff_to, handoff_at_ms  a replica under its fair share asking the owner for this lease

Every write is conditional, so the table, not any replica's memory, decides who reads a shard:

- take: only if there is no owner, or the lease expired, or it is already ours; and no other
  replica's hand-off request is pending. Bumps counter.
- renew, and checkpoint (a renew that also sets checkpoint and last_record_at): only if owner is
  me AND counter is the value I last wrote. A replica that paused past its lease and lost it to
  another finds out on its next write and stops reading that shard without checkpointing.
- release (on stop, shard end or hand-off): same condition; removes owner, keeps checkpoint.
- ask for hand-off: only if the lease is still the owner's and unexpired; counter untouched, so
  the owner's renewals go on and it hands over at a batch boundary.

A lost condition raises LeaseLost (or returns None/False where losing is ordinary). Lease times
come from each replica's clock; clock skew between replicas shortens or lengthens leases by
that much, as with any lease protocol. The table is small (one item per shard), so listing it
is a consistent Scan filtered on stream_arn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..errors import LeaseLost as LeaseLost
from .balance import Lease

LEASE_KEY = "lease_key"
LEASE_TABLE_SPEC: dict[str, Any] = {
    "AttributeDefinitions": [{"AttributeName": LEASE_KEY, "AttributeType": "S"}],
    "KeySchema": [{"AttributeName": LEASE_KEY, "KeyType": "HASH"}],
}
"""create_table arguments for the lease table (besides TableName and BillingMode)."""


class LeaseStore(Protocol):
    """The lease operations the consumer needs (adapters.state_table.LeaseTable, or a fake)."""

    async def read_all(self) -> dict[str, Lease]: ...

    async def acquire(self, shard_id: str, worker_id: str, now_ms: int) -> Lease | None: ...

    async def renew(
        self,
        lease: Lease,
        now_ms: int,
        *,
        checkpoint: str | None = None,
        last_record_at: datetime | None = None,
    ) -> Lease: ...

    async def release(self, lease: Lease, now_ms: int) -> None: ...

    async def request_handoff(self, lease: Lease, worker_id: str, now_ms: int) -> bool: ...


@dataclass(frozen=True)
class ShardProgress:
    """What an operator needs to judge one shard's progress; no record content."""

    shard_id: str
    owner: str | None
    checkpoint: str | None
    last_record_at: datetime | None
    expired: bool
