"""Create, idempotently, everything the worker needs: KMS keys and aliases, tables, queues.

What to create comes from resources.json (worker/resources.py), the definition the LocalStack
hook reads too. Safe to run again and again: what exists is kept, and its settings brought in
line (tables' server-side encryption, deletion protection and point-in-time recovery; every
queue attribute, encryption and policy included); what is missing is created.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from .aws import error_code
from .logs import get_logger
from .resources import (
    clear_other_encryption,
    definition,
    fifo_attributes,
    flag,
    point_in_time_recovery_status,
    queue_attributes,
    queue_encryption,
    queue_policy,
    render,
    setting_values,
    table_updates,
)
from .settings import Settings
from .streams.leases import LEASE_KEY

log = get_logger("userstore.provision")

STATE_KEY = LEASE_KEY  # the state table's key, shared by stream leases and sweep checkpoints
# Entries of a table's definition that are ours, not create_table arguments.
TABLE_EXTRAS = frozenset({"role", "ttl_attribute", "point_in_time_recovery"})
# How a missing queue answers GetQueueUrl (the JSON protocol's code, and the query-compatible one).
NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


@dataclass(frozen=True)
class Provisioned:
    key_arn: str
    table_arn: str
    stream_arn: str
    queue_url: str
    dlq_url: str
    payload_key_arn: str
    storage_key_arn: str  # server-side encryption of the tables and (SSE-KMS) the queues


async def provision(settings: Settings, kms: Any, ddb: Any, sqs: Any) -> Provisioned:
    values = setting_values(settings)
    spec = definition()
    # By role: the records' key, the payload key publishers seal event data under (they need
    # kms:GenerateDataKey on it; the worker only kms:Decrypt), the storage key (tables, queues).
    keys = {
        key["role"]: await ensure_key(kms, key["alias"], key["create"])
        for key in render(spec["keys"], values)
    }
    values = values | {"storage_key_arn": keys["storage"]}
    arns = [await ensure_table(ddb, render(table, values)) for table in spec["tables"]]
    dlq_url, queue_url = await ensure_queues(sqs, settings, values)
    log.info("provision.done", table=settings.table, queue=settings.queue, key=keys["records"])
    table_arn, stream_arn = arns[0]  # the users table comes first
    return Provisioned(
        keys["records"],
        table_arn,
        stream_arn,
        queue_url,
        dlq_url,
        keys["payloads"],
        keys["storage"],
    )


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
    return await _active(ddb, name)


async def _active(ddb: Any, name: str) -> dict[str, Any]:
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
    # One change per call, each after the last is done: a table being updated refuses another.
    # (moto 5.2.5 ignores SSESpecification on update_table; ministack and AWS apply it.)
    for update in table_updates(table, create):
        await ddb.update_table(TableName=name, **update)
        log.info("provision.table_updated", table=name, setting=next(iter(update)))
        table = await _active(ddb, name)
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
    if "point_in_time_recovery" in spec:
        await ensure_point_in_time_recovery(ddb, name, flag(spec["point_in_time_recovery"]))
    return str(table["TableArn"]), str(table.get("LatestStreamArn", ""))


async def ensure_point_in_time_recovery(ddb: Any, name: str, enabled: bool) -> None:
    """On or off as configured (both ways: off is a deliberate choice, see threat-model.md)."""
    described = await ddb.describe_continuous_backups(TableName=name)
    if point_in_time_recovery_status(described) == enabled:
        return
    spec = {"PointInTimeRecoveryEnabled": enabled}
    for _ in range(60):
        try:
            await ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification=spec
            )
            log.info("provision.point_in_time_recovery", table=name, enabled=enabled)
            return
        except ClientError as exc:
            # A table just created: AWS turns continuous backups on a moment later.
            if error_code(exc) != "ContinuousBackupsUnavailableException":
                raise
        await asyncio.sleep(1)
    raise TimeoutError(f"continuous backups of table {name} did not become available")


async def ensure_queues(sqs: Any, settings: Settings, values: dict[str, str]) -> tuple[str, str]:
    """The dead-letter queue, then the main queue redriving into it: (dlq_url, queue_url).

    `values`: the settings' and storage_key_arn. Both queues get the same encryption and policy.
    """
    if settings.queue.endswith(".fifo") != settings.dlq.endswith(".fifo"):
        raise ValueError("the queue and its dead-letter queue must both be FIFO or both standard")
    spec = definition()
    encryption = queue_encryption(values)
    dlq_url, dlq_arn = await ensure_queue(
        sqs, render(spec["dead_letter_queue"], values), encryption
    )
    queue = render(spec["queue"], values | {"dlq_arn": dlq_arn})
    queue_url, _ = await ensure_queue(sqs, queue, encryption)
    return dlq_url, queue_url


async def ensure_queue(
    sqs: Any, queue: dict[str, Any], encryption: dict[str, str]
) -> tuple[str, str]:
    """A rendered queue from the definition: (URL, ARN). Created encrypted; every attribute
    applied on every run, so a changed setting (or a hand-made change) is put right."""
    name = queue["QueueName"]
    attributes = queue_attributes(queue) | encryption
    try:
        url = str((await sqs.get_queue_url(QueueName=name))["QueueUrl"])
    except ClientError as exc:
        if error_code(exc) not in NO_QUEUE:
            raise
        # Encrypted from the first message on; the policy names the ARN, known once it exists.
        created = await sqs.create_queue(
            QueueName=name, Attributes=fifo_attributes(name) | attributes
        )
        url = str(created["QueueUrl"])
        log.info("provision.queue_created", queue=name)
    current = (
        await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn", "KmsMasterKeyId"])
    )["Attributes"]
    arn = str(current["QueueArn"])
    if first := clear_other_encryption(current, encryption):
        await sqs.set_queue_attributes(QueueUrl=url, Attributes=first)
    await sqs.set_queue_attributes(
        QueueUrl=url, Attributes=attributes | {"Policy": queue_policy(arn)}
    )
    return url, arn
