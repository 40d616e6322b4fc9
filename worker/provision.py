"""Create, idempotently, everything the worker needs: KMS key and alias, tables, queues.

Safe to run again and again: what exists is kept (and its settings brought in line where AWS
allows), what is missing is created.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from .aws import error_code
from .blind_index import INDEX_NAME
from .logs import get_logger
from .record import EMAIL_INDEX, PARTITION_KEY
from .settings import Settings
from .streams.leases import LEASE_KEY, LEASE_TABLE_SPEC

log = get_logger("userstore.provision")

TTL_ATTRIBUTE = "expires_at"
STATE_KEY = LEASE_KEY  # the state table's key, shared by stream leases and sweep checkpoints
# The dynamodb-encryption-sdk MetaStore schema: material name (S) and version (N).
META_PARTITION, META_SORT = "N", "V"


@dataclass(frozen=True)
class Provisioned:
    key_arn: str
    table_arn: str
    stream_arn: str
    queue_url: str
    dlq_url: str
    payload_key_arn: str = ""


async def provision(settings: Settings, kms: Any, ddb: Any, sqs: Any) -> Provisioned:
    key_arn = await ensure_key(kms, settings.kms_key)
    # Publishers seal event data under it (kms:GenerateDataKey); the worker only decrypts.
    payload_key_arn = await ensure_key(kms, settings.payload_kms_key, "userstore event payloads")
    table_arn, stream_arn = await ensure_table(ddb, settings.table)
    await ensure_meta_table(ddb, settings.meta_table)
    await ensure_state_table(ddb, settings.state_table)
    dlq_url, queue_url = await ensure_queues(sqs, settings)
    log.info("provision.done", table=settings.table, queue=settings.queue, key=key_arn)
    return Provisioned(key_arn, table_arn, stream_arn, queue_url, dlq_url, payload_key_arn)


async def ensure_key(kms: Any, key: str, description: str = "userstore record keys") -> str:
    """The key's ARN; when `key` is an alias that doesn't exist yet, create key and alias."""
    try:
        described = await kms.describe_key(KeyId=key)
        return str(described["KeyMetadata"]["Arn"])
    except ClientError as exc:
        if error_code(exc) != "NotFoundException" or not key.startswith("alias/"):
            raise
    created = await kms.create_key(
        Description=description, KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT"
    )
    arn = str(created["KeyMetadata"]["Arn"])
    await kms.create_alias(AliasName=key, TargetKeyId=created["KeyMetadata"]["KeyId"])
    log.info("provision.key_created", alias=key, key=arn)
    return arn


async def _create_table(ddb: Any, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        await ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **spec)
        log.info("provision.table_created", table=name)
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    for _ in range(120):
        table: dict[str, Any] = (await ddb.describe_table(TableName=name))["Table"]
        if table["TableStatus"] == "ACTIVE":
            return table
        await asyncio.sleep(0.5)
    raise TimeoutError(f"table {name} did not become ACTIVE")


_EMAIL_INDEX_GSI = {
    "IndexName": INDEX_NAME,
    "KeySchema": [{"AttributeName": EMAIL_INDEX, "KeyType": "HASH"}],
    "Projection": {"ProjectionType": "KEYS_ONLY"},
}


async def ensure_table(ddb: Any, name: str) -> tuple[str, str]:
    attributes = [
        {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
        {"AttributeName": EMAIL_INDEX, "AttributeType": "S"},
    ]
    table = await _create_table(
        ddb,
        name,
        {
            "AttributeDefinitions": attributes,
            "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [_EMAIL_INDEX_GSI],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        },
    )
    if not any(i["IndexName"] == INDEX_NAME for i in table.get("GlobalSecondaryIndexes", [])):
        # A table from before the blind index: add it (DynamoDB backfills it online).
        await ddb.update_table(
            TableName=name,
            AttributeDefinitions=attributes,
            GlobalSecondaryIndexUpdates=[{"Create": _EMAIL_INDEX_GSI}],
        )
    ttl = await ddb.describe_time_to_live(TableName=name)
    if ttl["TimeToLiveDescription"].get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        await ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    return str(table["TableArn"]), str(table.get("LatestStreamArn", ""))


async def ensure_state_table(ddb: Any, name: str) -> None:
    """Stream leases and checkpoints, sweep checkpoints: small items, one per lease or segment."""
    await _create_table(ddb, name, LEASE_TABLE_SPEC)


async def ensure_meta_table(ddb: Any, name: str) -> None:
    await _create_table(
        ddb,
        name,
        {
            "AttributeDefinitions": [
                {"AttributeName": META_PARTITION, "AttributeType": "S"},
                {"AttributeName": META_SORT, "AttributeType": "N"},
            ],
            "KeySchema": [
                {"AttributeName": META_PARTITION, "KeyType": "HASH"},
                {"AttributeName": META_SORT, "KeyType": "RANGE"},
            ],
        },
    )


def _queue_attributes(name: str) -> dict[str, str]:
    if name.endswith(".fifo"):
        return {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    return {}


async def ensure_queues(sqs: Any, settings: Settings) -> tuple[str, str]:
    """The dead-letter queue, then the main queue redriving into it: (dlq_url, queue_url)."""
    if settings.queue.endswith(".fifo") != settings.dlq.endswith(".fifo"):
        raise ValueError("the queue and its dead-letter queue must both be FIFO or both standard")
    dlq_url = (
        await sqs.create_queue(
            QueueName=settings.dlq,
            Attributes={**_queue_attributes(settings.dlq), "MessageRetentionPeriod": "1209600"},
        )
    )["QueueUrl"]
    dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    attributes = {
        "VisibilityTimeout": str(settings.visibility_timeout_s),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
        ),
    }
    queue_url = (
        await sqs.create_queue(
            QueueName=settings.queue, Attributes={**_queue_attributes(settings.queue)}
        )
    )["QueueUrl"]
    # Applied on every run, so a changed setting reaches an existing queue.
    await sqs.set_queue_attributes(QueueUrl=queue_url, Attributes=attributes)
    return str(dlq_url), str(queue_url)
