"""The encrypted record store: read, and write conditioned on the revision read.

Items come in and go out sealed; this module never sees plaintext personal data. DynamoDB
errors are translated here and in worker.aws, nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .aws import Refused, call
from .errors import AwsUnavailable
from .record import PARTITION_KEY, Item, RecordHead, read_head

_BATCH_GET_MAX = 100
_CONDITION_FAILED = frozenset({"ConditionalCheckFailedException"})
_UNPROCESSED_ROUNDS = 8


@dataclass(frozen=True)
class StoredRecord:
    """A sealed item as read from the table, with its bookkeeping (not yet verified)."""

    item: Item
    head: RecordHead


@dataclass(frozen=True)
class PutResult:
    """`written`, or lost the race: then `current` is what the winner left (None: no item)."""

    written: bool
    current: StoredRecord | None = None


def _record(item: Item | None) -> StoredRecord | None:
    return None if not item else StoredRecord(item, read_head(item))


class RecordStore:
    def __init__(self, client: Any, table: str, *, max_attempts: int) -> None:
        self._client = client
        self._table = table
        self._max_attempts = max_attempts

    @property
    def table(self) -> str:
        return self._table

    async def get(self, user_id: str) -> StoredRecord | None:
        response = await call(
            "GetItem",
            self._client.get_item,
            max_attempts=self._max_attempts,
            TableName=self._table,
            Key={PARTITION_KEY: {"S": user_id}},
            ConsistentRead=True,
        )
        return _record(response.get("Item"))

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, StoredRecord | None]:
        """Consistent reads of many users in as few requests as DynamoDB allows."""
        wanted = sorted(set(user_ids))
        found: dict[str, StoredRecord | None] = dict.fromkeys(wanted)
        for start in range(0, len(wanted), _BATCH_GET_MAX):
            keys = [{PARTITION_KEY: {"S": uid}} for uid in wanted[start : start + _BATCH_GET_MAX]]
            for round_ in range(_UNPROCESSED_ROUNDS):
                response = await call(
                    "BatchGetItem",
                    self._client.batch_get_item,
                    max_attempts=self._max_attempts,
                    RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}},
                )
                for item in response.get("Responses", {}).get(self._table, []):
                    record = _record(item)
                    assert record is not None
                    found[record.head.user_id] = record
                keys = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
                if not keys:
                    break
                await asyncio.sleep(min(0.05 * 2**round_, 1.0))
            else:
                raise AwsUnavailable("BatchGetItem kept returning unprocessed keys")
        return found

    async def put(self, item: Item, *, expected_rev: int | None) -> PutResult:
        """Write `item` if the stored revision is still `expected_rev` (None: no item yet)."""
        if expected_rev is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(user_id)"}
        else:
            condition = {
                "ConditionExpression": "#rev = :rev",
                "ExpressionAttributeNames": {"#rev": "rev"},
                "ExpressionAttributeValues": {":rev": {"N": str(expected_rev)}},
            }
        try:
            await call(
                "PutItem",
                self._client.put_item,
                max_attempts=self._max_attempts,
                TableName=self._table,
                Item=item,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                expected=_CONDITION_FAILED,
                **condition,
            )
        except Refused as exc:
            # The loser gets the winner's item in the same round trip.
            return PutResult(False, _record(exc.response.get("Item")))
        return PutResult(True)
