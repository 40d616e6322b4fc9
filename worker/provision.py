"""Create, idempotently, everything the worker needs: KMS key and alias, tables, queues.

What to create comes from resources.json (worker/resources.py), the definition the LocalStack
hook reads too. Safe to run again and again: what exists is kept (and its settings brought in
line where AWS allows), what is missing is created.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from .aws import error_code
from .logs import get_logger
from .resources import definition, fifo_attributes, queue_attributes, render, setting_values
from .settings import Settings
from .streams.leases import LEASE_KEY

log = get_logger("userstore.provision")

STATE_KEY = LEASE_KEY  # the state table's key, shared by stream leases and sweep checkpoints
# Entries of a table's definition that are ours, not create_table arguments.
TABLE_EXTRAS = frozenset({"role", "ttl_attribute"})


@dataclass(frozen=True)
class Provisioned:
    key_arn: str
    table_arn: str
    stream_arn: str
    queue_url: str
    dlq_url: str
    payload_key_arn: str


async def provision(settings: Settings, kms: Any, ddb: Any, sqs: Any) -> Provisioned:
    values = setting_values(settings)
    spec = definition()
    # The records' key first, then the payload key publishers seal event data under (they need
    # kms:GenerateDataKey on it; the worker only kms:Decrypt).
    key_arn, payload_key_arn = [
        await ensure_key(kms, key["alias"], key["create"]) for key in render(spec["keys"], values)
    ]
    arns = [await ensure_table(ddb, render(table, values)) for table in spec["tables"]]
    dlq_url, queue_url = await ensure_queues(sqs, settings, values)
    log.info("provision.done", table=settings.table, queue=settings.queue, key=key_arn)
    table_arn, stream_arn = arns[0]  # the users table comes first
    return Provisioned(key_arn, table_arn, stream_arn, queue_url, dlq_url, payload_key_arn)


async def ensure_key(kms: Any, key: str, create: dict[str, Any]) -> str:
    """The key's ARN; when `key` is an alias that doesn't exist yet, create key and alias."""
    try:
        described = await kms.describe_key(KeyId=key)
        return str(described["KeyMetadata"]["Arn"])
    except ClientError as exc:
        if error_code(exc) != "NotFoundException" or not key.startswith("alias/"):
            raise
    created = await kms.create_key(**create)
    arn = str(created["KeyMetadata"]["Arn"])
    await kms.create_alias(AliasName=key, TargetKeyId=created["KeyMetadata"]["KeyId"])
    log.info("provision.key_created", alias=key, key=arn)
    return arn


async def _create_table(ddb: Any, create: dict[str, Any]) -> dict[str, Any]:
    name = create["TableName"]
    try:
        await ddb.create_table(**create)
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


async def ensure_table(ddb: Any, spec: dict[str, Any]) -> tuple[str, str]:
    """A rendered table from the definition: (table ARN, latest stream ARN or "")."""
    create = {k: v for k, v in spec.items() if k not in TABLE_EXTRAS}
    name = create["TableName"]
    table = await _create_table(ddb, create)
    present = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
    for index in create.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] not in present:
            # A table from before this index: add it (DynamoDB backfills it online).
            await ddb.update_table(
                TableName=name,
                AttributeDefinitions=create["AttributeDefinitions"],
                GlobalSecondaryIndexUpdates=[{"Create": index}],
            )
    if "ttl_attribute" in spec:
        ttl = await ddb.describe_time_to_live(TableName=name)
        if ttl["TimeToLiveDescription"].get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            await ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec["ttl_attribute"]},
            )
    return str(table["TableArn"]), str(table.get("LatestStreamArn", ""))


async def ensure_queues(sqs: Any, settings: Settings, values: dict[str, str]) -> tuple[str, str]:
    """The dead-letter queue, then the main queue redriving into it: (dlq_url, queue_url)."""
    if settings.queue.endswith(".fifo") != settings.dlq.endswith(".fifo"):
        raise ValueError("the queue and its dead-letter queue must both be FIFO or both standard")
    spec = definition()
    dlq = render(spec["dead_letter_queue"], values)
    dlq_url = (
        await sqs.create_queue(
            QueueName=dlq["QueueName"],
            Attributes=fifo_attributes(dlq["QueueName"]) | queue_attributes(dlq),
        )
    )["QueueUrl"]
    dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    queue = render(spec["queue"], values | {"dlq_arn": dlq_arn})
    queue_url = (
        await sqs.create_queue(
            QueueName=queue["QueueName"], Attributes=fifo_attributes(queue["QueueName"])
        )
    )["QueueUrl"]
    # Applied on every run, so a changed setting reaches an existing queue.
    await sqs.set_queue_attributes(QueueUrl=queue_url, Attributes=queue_attributes(queue))
    return str(dlq_url), str(queue_url)
