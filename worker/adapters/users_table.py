"""The users table adapter: sealed records read, written conditioned on the revision read,
scanned and looked up by email token. The only code that calls the users table.

Items come in and go out sealed; this module never sees plaintext personal data. DynamoDB
errors are translated here (through worker.aws), nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ..aws import Refused, call, pages
from ..blind_index import INDEX_NAME
from ..errors import AwsUnavailable
from ..ports import PutResult, ScanPage, StoredRecord
from ..record import EMAIL_INDEX, PARTITION_KEY, Item, read_head

_BATCH_GET_MAX = 100
_CONDITION_FAILED = frozenset({"ConditionalCheckFailedException"})
_UNPROCESSED_ROUNDS = 8


def _record(item: Item | None) -> StoredRecord | None:
    return None if not item else StoredRecord(item, read_head(item))


class UsersTable:
    """The users table over aiobotocore (implements ports.UsersTable)."""

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

    async def scan_page(
        self, segment: int, segments: int, *, limit: int, start: dict[str, Any] | None
    ) -> ScanPage:
        kwargs: dict[str, Any] = {} if start is None else {"ExclusiveStartKey": start}
        page = await call(
            "Scan",
            self._client.scan,
            max_attempts=self._max_attempts,
            TableName=self._table,
            Segment=segment,
            TotalSegments=segments,
            Limit=limit,
            # Whole items, not a projection of the bookkeeping: a scan is charged by item size
            # either way, and the item read here is what is resealed, which saves a GetItem
            # per stale record (the write is still conditioned on its revision).
            ConsistentRead=True,
            **kwargs,
        )
        return ScanPage(page.get("Items", []), page.get("LastEvaluatedKey"))

    async def scan_bookkeeping(self, segment: int, segments: int) -> AsyncIterator[list[Item]]:
        pages = self._pages(
            "Scan",
            self._client.scan,
            Segment=segment,
            TotalSegments=segments,
            ProjectionExpression="user_id, rev, key_ref, email_idx, presence, #format, h",
            ExpressionAttributeNames={"#format": "format"},
        )
        async for page in pages:
            yield page.get("Items", [])

    async def users_with_email_token(self, token: str) -> set[str]:
        pages = self._pages(
            "Query",
            self._client.query,
            IndexName=INDEX_NAME,
            KeyConditionExpression="#idx = :token",
            ExpressionAttributeNames={"#idx": EMAIL_INDEX},
            ExpressionAttributeValues={":token": {"S": token}},
        )
        return {item[PARTITION_KEY]["S"] async for page in pages for item in page.get("Items", [])}

    def _pages(self, operation: str, fn: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        return pages(
            operation, fn, max_attempts=self._max_attempts, TableName=self._table, **kwargs
        )

    async def _describe(self) -> dict[str, Any]:
        described = await call(
            "DescribeTable",
            self._client.describe_table,
            max_attempts=self._max_attempts,
            TableName=self._table,
        )
        table: dict[str, Any] = described["Table"]
        return table

    async def approximate_count(self) -> int | None:
        """DynamoDB's item count (updated about every six hours): for progress bars."""
        count = (await self._describe()).get("ItemCount")
        return None if count is None else int(count)

    async def stream_arn(self) -> str | None:
        """The table's stream, if it has one."""
        arn = (await self._describe()).get("LatestStreamArn")
        return str(arn) if arn else None
