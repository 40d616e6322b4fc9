"""Shard leases and checkpoints in a DynamoDB table: the adapter and its protocol.

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

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..aws import Refused, call
from ..errors import LeaseLost as LeaseLost
from .balance import Lease

LEASE_KEY = "lease_key"
LEASE_TABLE_SPEC: dict[str, Any] = {
    "AttributeDefinitions": [{"AttributeName": LEASE_KEY, "AttributeType": "S"}],
    "KeySchema": [{"AttributeName": LEASE_KEY, "KeyType": "HASH"}],
}
"""create_table arguments for the lease table (besides TableName and BillingMode)."""

_CONDITION_FAILED = frozenset({"ConditionalCheckFailedException"})


class LeaseStore(Protocol):
    """The lease operations the consumer needs (LeaseTable; an in-memory fake in tests)."""

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


def _iso(moment_ms: int) -> str:
    return datetime.fromtimestamp(moment_ms / 1000, UTC).isoformat()


def _s(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value["S"])


def _n(item: dict[str, Any], name: str) -> int:
    value = item.get(name)
    return 0 if value is None else int(value["N"])


def lease_from_item(item: dict[str, Any]) -> Lease:
    last = _s(item, "last_record_at")
    return Lease(
        shard_id=str(item["shard_id"]["S"]),
        owner=_s(item, "owner"),
        counter=_n(item, "counter"),
        expires_at_ms=_n(item, "expires_at_ms"),
        checkpoint=_s(item, "checkpoint"),
        last_record_at=None if last is None else datetime.fromisoformat(last),
        handoff_to=_s(item, "handoff_to"),
        handoff_at_ms=_n(item, "handoff_at_ms"),
    )


def _names(expression: str) -> dict[str, str]:
    """ExpressionAttributeNames for the `#name` placeholders used (DynamoDB rejects extras)."""
    names = {
        "owner",
        "counter",
        "expires_at_ms",
        "checkpoint",
        "last_record_at",
        "updated_at",
        "stream_arn",
        "shard_id",
        "handoff_to",
        "handoff_at_ms",
    }
    return {f"#{name}": name for name in names if f"#{name}" in expression}


class LeaseTable:
    """LeaseStore on a DynamoDB table, every call through worker.aws.call."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        stream_arn: str,
        lease_duration_s: float,
        max_attempts: int,
    ) -> None:
        self._client = client
        self._table = table
        self._stream_arn = stream_arn
        self._lease_ms = round(lease_duration_s * 1000)
        self._max_attempts = max_attempts

    def _key(self, shard_id: str) -> dict[str, Any]:
        return {LEASE_KEY: {"S": f"{self._stream_arn}/{shard_id}"}}

    async def read_all(self) -> dict[str, Lease]:
        leases: dict[str, Lease] = {}
        start: dict[str, Any] | None = None
        while True:
            extra: dict[str, Any] = {} if start is None else {"ExclusiveStartKey": start}
            response = await call(
                "Scan",
                self._client.scan,
                max_attempts=self._max_attempts,
                TableName=self._table,
                ConsistentRead=True,
                FilterExpression="#stream_arn = :arn",
                ExpressionAttributeNames=_names("#stream_arn"),
                ExpressionAttributeValues={":arn": {"S": self._stream_arn}},
                **extra,
            )
            for item in response.get("Items", []):
                lease = lease_from_item(item)
                leases[lease.shard_id] = lease
            start = response.get("LastEvaluatedKey")
            if not start:
                return leases

    async def _update(
        self, operation: str, shard_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> Lease | None:
        """One conditional UpdateItem; None when the condition failed."""
        try:
            response = await call(
                operation,
                self._client.update_item,
                max_attempts=self._max_attempts,
                expected=_CONDITION_FAILED,
                TableName=self._table,
                Key=self._key(shard_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(update + condition),
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except Refused:
            return None
        return lease_from_item(response["Attributes"])

    async def acquire(self, shard_id: str, worker_id: str, now_ms: int) -> Lease | None:
        return await self._update(
            "AcquireLease",
            shard_id,
            "SET #owner = :me, #expires_at_ms = :expires,"
            " #counter = if_not_exists(#counter, :zero) + :one,"
            " #stream_arn = :arn, #shard_id = :shard, #updated_at = :now_iso"
            " REMOVE #handoff_to, #handoff_at_ms",
            "(attribute_not_exists(#owner) OR #expires_at_ms <= :now OR #owner = :me)"
            " AND (attribute_not_exists(#handoff_to) OR #handoff_to = :me"
            " OR #handoff_at_ms <= :stale)",
            {
                ":me": {"S": worker_id},
                ":expires": {"N": str(now_ms + self._lease_ms)},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
                ":arn": {"S": self._stream_arn},
                ":shard": {"S": shard_id},
                ":now_iso": {"S": _iso(now_ms)},
                ":now": {"N": str(now_ms)},
                ":stale": {"N": str(now_ms - self._lease_ms)},
            },
        )

    async def renew(
        self,
        lease: Lease,
        now_ms: int,
        *,
        checkpoint: str | None = None,
        last_record_at: datetime | None = None,
    ) -> Lease:
        update = "SET #expires_at_ms = :expires, #counter = :next, #updated_at = :now_iso"
        values: dict[str, Any] = {
            ":expires": {"N": str(now_ms + self._lease_ms)},
            ":next": {"N": str(lease.counter + 1)},
            ":now_iso": {"S": _iso(now_ms)},
            ":me": {"S": lease.owner or ""},
            ":counter": {"N": str(lease.counter)},
        }
        if checkpoint is not None:
            update += ", #checkpoint = :checkpoint"
            values[":checkpoint"] = {"S": checkpoint}
        if last_record_at is not None:
            update += ", #last_record_at = :last"
            values[":last"] = {"S": last_record_at.isoformat()}
        renewed = await self._update(
            "RenewLease", lease.shard_id, update, "#owner = :me AND #counter = :counter", values
        )
        if renewed is None:
            raise LeaseLost(f"lease of shard {lease.shard_id} lost")
        return renewed

    async def release(self, lease: Lease, now_ms: int) -> None:
        released = await self._update(
            "ReleaseLease",
            lease.shard_id,
            "SET #expires_at_ms = :zero, #counter = :next, #updated_at = :now_iso REMOVE #owner",
            "#owner = :me AND #counter = :counter",
            {
                ":zero": {"N": "0"},
                ":next": {"N": str(lease.counter + 1)},
                ":now_iso": {"S": _iso(now_ms)},
                ":me": {"S": lease.owner or ""},
                ":counter": {"N": str(lease.counter)},
            },
        )
        if released is None:
            raise LeaseLost(f"lease of shard {lease.shard_id} lost")

    async def request_handoff(self, lease: Lease, worker_id: str, now_ms: int) -> bool:
        requested = await self._update(
            "RequestLeaseHandoff",
            lease.shard_id,
            "SET #handoff_to = :me, #handoff_at_ms = :now",
            "#owner = :owner AND #expires_at_ms > :now AND (attribute_not_exists(#handoff_to)"
            " OR #handoff_to = :me OR #handoff_at_ms <= :stale)",
            {
                ":me": {"S": worker_id},
                ":owner": {"S": lease.owner or ""},
                ":now": {"N": str(now_ms)},
                ":stale": {"N": str(now_ms - self._lease_ms)},
            },
        )
        return requested is not None


@dataclass(frozen=True)
class ShardProgress:
    """What an operator needs to judge one shard's progress; no record content."""

    shard_id: str
    owner: str | None
    checkpoint: str | None
    last_record_at: datetime | None
    expired: bool


async def read_progress(
    dynamodb_client: Any,
    lease_table: str,
    stream_arn: str,
    *,
    now_s: float | None = None,
    max_attempts: int = 3,
) -> list[ShardProgress]:
    """Every shard's lease of `stream_arn`, by shard id: for `userstore` operator commands.

    Lag is `now - last_record_at` for a shard that is behind; a shard with no owner or an
    expired lease is not being read by anyone.
    """
    now_ms = round((time.time() if now_s is None else now_s) * 1000)
    table = LeaseTable(
        dynamodb_client,
        lease_table,
        stream_arn=stream_arn,
        lease_duration_s=0,  # not writing
        max_attempts=max_attempts,
    )
    leases = await table.read_all()
    return [
        ShardProgress(
            shard_id=lease.shard_id,
            owner=lease.owner,
            checkpoint=lease.checkpoint,
            last_record_at=lease.last_record_at,
            expired=not lease.alive(now_ms),
        )
        for lease in sorted(leases.values(), key=lambda lease: lease.shard_id)
    ]
