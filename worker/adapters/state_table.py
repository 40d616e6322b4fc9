"""The state table adapter: the sweep's leases and checkpoints, and the shards' progress.

Sweep items, by the table's key: `sweep/<job>/lease` (owner, expires_at) and
`sweep/<job>/segment-<n>` (a segment's position and counts). The stream readers' shard leases
share the table: `LeaseTable` below holds their conditional writes (the protocol is described in
worker.streams.leases). DynamoDB errors are translated through worker.aws, nowhere else.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from ..aws import Refused, call, pages
from ..errors import LeaseLost
from ..ports import Checkpoint, SweepCounts
from ..provision import STATE_KEY
from ..streams.balance import Lease
from ..streams.leases import LEASE_KEY, ShardProgress

_MAX_FAILED_IDS = 100
_CONDITION_FAILED = frozenset({"ConditionalCheckFailedException"})


def _counts_item(counts: SweepCounts) -> dict[str, Any]:
    return {f.name: {"N": str(getattr(counts, f.name))} for f in fields(counts)}


def _counts(item: dict[str, Any]) -> SweepCounts:
    return SweepCounts(
        **{f.name: int(item.get(f.name, {}).get("N", "0")) for f in fields(SweepCounts)}
    )


class StateTable:
    """The state table over aiobotocore (ports.SweepState, ports.ShardProgressReader)."""

    def __init__(self, client: Any, table: str, *, max_attempts: int) -> None:
        self._client = client
        self._table = table
        self._max_attempts = max_attempts

    def _key(self, job: str, suffix: str) -> dict[str, Any]:
        return {STATE_KEY: {"S": f"sweep/{job}/{suffix}"}}

    async def take_lease(self, job: str, owner: str, *, now_s: float, lease_s: float) -> bool:
        try:
            await call(
                "PutItem",
                self._client.put_item,
                max_attempts=self._max_attempts,
                TableName=self._table,
                Item={
                    **self._key(job, "lease"),
                    "owner": {"S": owner},
                    "expires_at": {"N": str(now_s + lease_s)},
                },
                ConditionExpression="attribute_not_exists(#o) OR expires_at < :now OR #o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":now": {"N": str(now_s)}, ":me": {"S": owner}},
                expected=_CONDITION_FAILED,
            )
        except Refused:
            return False
        return True

    async def release_lease(self, job: str) -> None:
        await self._delete(self._key(job, "lease"))

    async def load(self, job: str, segment: int) -> Checkpoint:
        response = await call(
            "GetItem",
            self._client.get_item,
            max_attempts=self._max_attempts,
            TableName=self._table,
            Key=self._key(job, f"segment-{segment}"),
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return Checkpoint()
        last = item.get("last_key", {}).get("S")
        return Checkpoint(
            last_key=json.loads(last) if last else None,
            done=item["done"]["BOOL"],
            counts=_counts(item),
            failed_ids=[v["S"] for v in item.get("failed_ids", {}).get("L", [])],
        )

    async def save(self, job: str, segment: int, checkpoint: Checkpoint) -> None:
        item = {
            **self._key(job, f"segment-{segment}"),
            "done": {"BOOL": checkpoint.done},
            "failed_ids": {"L": [{"S": uid} for uid in checkpoint.failed_ids[:_MAX_FAILED_IDS]]},
            **_counts_item(checkpoint.counts),
        }
        if checkpoint.last_key is not None:
            item["last_key"] = {"S": json.dumps(checkpoint.last_key)}
        await call(
            "PutItem",
            self._client.put_item,
            max_attempts=self._max_attempts,
            TableName=self._table,
            Item=item,
        )

    async def forget(self, job: str, segments: int) -> None:
        for segment in range(segments):
            await self._delete(self._key(job, f"segment-{segment}"))

    async def _delete(self, key: dict[str, Any]) -> None:
        await call(
            "DeleteItem",
            self._client.delete_item,
            max_attempts=self._max_attempts,
            TableName=self._table,
            Key=key,
        )

    async def shard_progress(self, stream_arn: str) -> list[ShardProgress]:
        return await read_progress(
            self._client, self._table, stream_arn, max_attempts=self._max_attempts
        )


# --- the stream readers' shard leases ---------------------------------------------------------


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
        scan = pages(
            "Scan",
            self._client.scan,
            max_attempts=self._max_attempts,
            TableName=self._table,
            ConsistentRead=True,
            FilterExpression="#stream_arn = :arn",
            ExpressionAttributeNames=_names("#stream_arn"),
            ExpressionAttributeValues={":arn": {"S": self._stream_arn}},
        )
        async for page in scan:
            for item in page.get("Items", []):
                lease = lease_from_item(item)
                leases[lease.shard_id] = lease
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
