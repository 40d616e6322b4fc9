"""The state table adapter: the sweep's leases and checkpoints, and the shards' progress.

Sweep items, by the table's key: `sweep/<job>/lease` (owner, expires_at) and
`sweep/<job>/segment-<n>` (a segment's position and counts). The stream readers' shard leases
share the table; their conditional writes are worker.streams.leases.LeaseTable's, read here
for reports. DynamoDB errors are translated through worker.aws, nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from ..aws import Refused, call
from ..ports import Checkpoint, SweepCounts
from ..provision import STATE_KEY
from ..streams.leases import ShardProgress, read_progress

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
