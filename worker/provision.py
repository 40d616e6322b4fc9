"""Create, idempotently, everything the worker needs: KMS keys and aliases, tables, queues;
bring what exists in line, and report what can't be.

What to create comes from resources.json (worker/resources.py), the definition the LocalStack
hook reads too. Safe to run again and again: what is missing is created; what exists is
compared with the definition and each setting AWS lets us change is updated (tables' server-side
encryption, stream, time to live, deletion protection and point-in-time recovery; every queue
attribute, encryption and policy included). What can't be changed in place (a queue's FifoQueue,
a table's key, a stream's view type, ...) is left alone and reported: resource, attribute,
expected and found (worker/provision_report.py; `userstore provision` then exits non-zero).

Every AWS call goes through worker/aws.py's `call`: the refusals decided on here come back as
`Refused`; anything else is AwsUnavailable, like everywhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .aws import Refused, call
from .errors import AwsUnavailable, KeyNotFound, Misconfigured
from .logs import get_logger
from .provision_report import ProvisionReport
from .resources import (
    Mismatch,
    TimeToLive,
    clear_other_encryption,
    definition,
    fifo_attributes,
    flag,
    key_mismatches,
    merged_policy,
    point_in_time_recovery_status,
    queue_attributes,
    queue_changes,
    queue_encryption,
    render,
    setting_values,
    table_mismatches,
    table_updates,
    time_to_live,
)
from .settings import Settings
from .streams.leases import LEASE_KEY

log = get_logger("userstore.provision")

STATE_KEY = LEASE_KEY  # the state table's key, shared by stream leases and sweep checkpoints
# Entries of a table's definition that are ours, not create_table arguments.
TABLE_EXTRAS = frozenset({"role", "ttl_attribute", "point_in_time_recovery"})
# How a missing queue answers GetQueueUrl (the JSON protocol's code, and the query-compatible one).
NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
QUEUE_EXISTS = frozenset({"QueueAlreadyExists", "QueueNameExists"})
# An update AWS refuses (a value it won't take, a change too soon after the last): reported.
REFUSED_UPDATE = frozenset(
    {
        "ValidationException",
        "ResourceInUseException",  # a table being updated; moto: a stream enabled once
        "InvalidAttributeValue",
        "InvalidAttributeName",
        "InvalidParameterValue",
    }
)


@dataclass(frozen=True)
class Provisioned:
    key_arn: str
    table_arn: str
    stream_arn: str
    queue_url: str
    dlq_url: str
    payload_key_arn: str
    storage_key_arn: str  # server-side encryption of the tables and (SSE-KMS) the queues


class _Aws:
    """`call` with the settings' attempts, and the report every step writes to."""

    def __init__(self, settings: Settings, report: ProvisionReport) -> None:
        self.max_attempts = settings.aws_max_attempts
        self.report = report

    async def __call__(
        self, operation: str, fn: Any, /, *, expected: Collection[str] = (), **kwargs: Any
    ) -> Any:
        codes = frozenset(expected)
        return await call(operation, fn, max_attempts=self.max_attempts, expected=codes, **kwargs)

    async def update(
        self, resource: str, setting: str, expected: str, operation: str, fn: Any, **kwargs: Any
    ) -> bool:
        """One update of `setting`; a refusal is reported (with AWS's reason), not raised."""
        try:
            await self(operation, fn, expected=REFUSED_UPDATE, **kwargs)
        except Refused as exc:
            message = str(exc.response.get("Error", {}).get("Message", ""))[:300]
            found = f"unchanged, {operation} refused ({exc.code}: {message})"
            self.report.differs(resource, Mismatch(setting, expected, found))
            return False
        self.report.updated(resource, setting)
        return True


async def provision(
    settings: Settings, kms: Any, ddb: Any, sqs: Any, report: ProvisionReport | None = None
) -> Provisioned:
    """Everything in place; what was done (and what differs) goes to `report` when given."""
    _check_queue_kinds(settings)  # before anything is made
    aws = _Aws(settings, report if report is not None else ProvisionReport())
    values = setting_values(settings)
    spec = definition()
    # By role: the records' key, the payload key publishers seal event data under (they need
    # kms:GenerateDataKey on it; the worker only kms:Decrypt), the storage key (tables, queues).
    keys = {
        key["role"]: await ensure_key(aws, kms, key["alias"], key["create"])
        for key in render(spec["keys"], values)
    }
    values = values | {"storage_key_arn": keys["storage"]}
    arns = [await ensure_table(aws, ddb, render(table, values)) for table in spec["tables"]]
    dlq_url, queue_url = await _ensure_queues(aws, sqs, settings, values)
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


def _check_queue_kinds(settings: Settings) -> None:
    if settings.queue.endswith(".fifo") != settings.dlq.endswith(".fifo"):
        raise Misconfigured(
            "USERSTORE_QUEUE and USERSTORE_DLQ must both be FIFO (.fifo) or both standard"
        )


async def ensure_key(aws: _Aws, kms: Any, key: str, create: dict[str, Any]) -> str:
    """The key's ARN; when `key` is an alias that doesn't exist yet, create key and alias."""
    resource = f"key {key}"
    try:
        described = await aws(
            "DescribeKey", kms.describe_key, expected={"NotFoundException"}, KeyId=key
        )
    except Refused:
        if not key.startswith("alias/"):
            raise KeyNotFound(
                f"KMS key {key} does not exist: name an existing key, or an alias (alias/...)"
                " for provision to create"
            ) from None
    else:
        metadata = described["KeyMetadata"]
        aws.report.differs(resource, *key_mismatches(metadata, create))
        return str(metadata["Arn"])
    created = (await aws("CreateKey", kms.create_key, **create))["KeyMetadata"]
    await aws("CreateAlias", kms.create_alias, AliasName=key, TargetKeyId=created["KeyId"])
    aws.report.created(resource)
    log.info("provision.key_created", alias=key, key=created["Arn"])
    return str(created["Arn"])


async def _active(aws: _Aws, ddb: Any, name: str) -> dict[str, Any]:
    for _ in range(120):
        table: dict[str, Any] = (await aws("DescribeTable", ddb.describe_table, TableName=name))[
            "Table"
        ]
        if table["TableStatus"] == "ACTIVE":
            return table
        await asyncio.sleep(0.5)
    raise AwsUnavailable(f"table {name} did not become ACTIVE within 60 s")


async def ensure_table(aws: _Aws, ddb: Any, spec: dict[str, Any]) -> tuple[str, str]:
    """A rendered table from the definition: (table ARN, latest stream ARN or "")."""
    create = {k: v for k, v in spec.items() if k not in TABLE_EXTRAS}
    name = create["TableName"]
    resource = f"table {name}"
    try:
        await aws("CreateTable", ddb.create_table, expected={"ResourceInUseException"}, **create)
        aws.report.created(resource)
        log.info("provision.table_created", table=name)
    except Refused:
        aws.report.found(resource)
    table = await _active(aws, ddb, name)
    aws.report.differs(resource, *table_mismatches(table, create))
    # One change per call, each after the last is done: a table being updated refuses another.
    # (moto 5.2.5 ignores SSESpecification on update_table; ministack and AWS apply it.)
    for update in table_updates(table, create):
        [(setting, value)] = update.items()
        if await aws.update(
            resource, setting, str(value), "UpdateTable", ddb.update_table, TableName=name, **update
        ):
            log.info("provision.table_updated", table=name, setting=setting)
            table = await _active(aws, ddb, name)
    present = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
    for index in create.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] not in present:
            # A table from before this index: add it (DynamoDB backfills it online).
            await aws.update(
                resource,
                f"index {index['IndexName']}",
                "present",
                "UpdateTable",
                ddb.update_table,
                TableName=name,
                AttributeDefinitions=create["AttributeDefinitions"],
                GlobalSecondaryIndexUpdates=[{"Create": index}],
            )
    if "ttl_attribute" in spec:
        await _ensure_time_to_live(aws, ddb, name, spec["ttl_attribute"])
    if "point_in_time_recovery" in spec:
        await ensure_point_in_time_recovery(aws, ddb, name, flag(spec["point_in_time_recovery"]))
    return str(table["TableArn"]), str(table.get("LatestStreamArn", ""))


async def _ensure_time_to_live(aws: _Aws, ddb: Any, name: str, attribute: str) -> None:
    resource = f"table {name}"
    described = await aws("DescribeTimeToLive", ddb.describe_time_to_live, TableName=name)
    decision = time_to_live(described.get("TimeToLiveDescription", {}), attribute)
    if isinstance(decision, Mismatch):
        aws.report.differs(resource, decision)
    elif decision is TimeToLive.ENABLE:
        await aws.update(
            resource,
            "TimeToLive",
            f"ENABLED on {attribute}",
            "UpdateTimeToLive",
            ddb.update_time_to_live,
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
        )


async def ensure_point_in_time_recovery(aws: _Aws, ddb: Any, name: str, enabled: bool) -> None:
    """On or off as configured (both ways: off is a deliberate choice, see threat-model.md)."""
    described = await aws(
        "DescribeContinuousBackups", ddb.describe_continuous_backups, TableName=name
    )
    if point_in_time_recovery_status(described) == enabled:
        return
    spec = {"PointInTimeRecoveryEnabled": enabled}
    for _ in range(60):
        try:
            await aws(
                "UpdateContinuousBackups",
                ddb.update_continuous_backups,
                # A table just created: AWS turns continuous backups on a moment later.
                expected={"ContinuousBackupsUnavailableException"},
                TableName=name,
                PointInTimeRecoverySpecification=spec,
            )
        except Refused:
            await asyncio.sleep(1)
            continue
        aws.report.updated(f"table {name}", "PointInTimeRecovery")
        log.info("provision.point_in_time_recovery", table=name, enabled=enabled)
        return
    raise AwsUnavailable(f"continuous backups of table {name} did not become available in 60 s")


async def ensure_queues(
    sqs: Any, settings: Settings, values: dict[str, str], report: ProvisionReport | None = None
) -> tuple[str, str]:
    """The dead-letter queue, then the main queue redriving into it: (dlq_url, queue_url).

    `values`: the settings' and storage_key_arn. Both queues get the same encryption and policy.
    """
    aws = _Aws(settings, report if report is not None else ProvisionReport())
    return await _ensure_queues(aws, sqs, settings, values)


async def _ensure_queues(
    aws: _Aws, sqs: Any, settings: Settings, values: dict[str, str]
) -> tuple[str, str]:
    _check_queue_kinds(settings)
    spec = definition()
    encryption = queue_encryption(values)
    dlq_url, dlq_arn = await ensure_queue(
        aws, sqs, render(spec["dead_letter_queue"], values), encryption
    )
    queue = render(spec["queue"], values | {"dlq_arn": dlq_arn})
    queue_url, _ = await ensure_queue(aws, sqs, queue, encryption)
    return dlq_url, queue_url


async def ensure_queue(
    aws: _Aws, sqs: Any, queue: dict[str, Any], encryption: dict[str, str]
) -> tuple[str, str]:
    """A rendered queue from the definition: (URL, ARN). Created encrypted; every attribute
    compared on every run, and each that differs set, so a changed setting (or a hand-made
    change) is put right; what SQS can't change is reported."""
    name = queue["QueueName"]
    resource = f"queue {name}"
    attributes = fifo_attributes(name) | queue_attributes(queue) | encryption
    url = await _queue_url(aws, sqs, name, attributes)
    current = (
        await aws(
            "GetQueueAttributes", sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"]
        )
    )["Attributes"]
    arn = str(current["QueueArn"])
    # The policy: ours, beside any statement an operator added (an EventBridge or SNS grant).
    wanted = attributes | {"Policy": merged_policy(current.get("Policy"), arn)}
    changes = queue_changes(current, wanted)
    aws.report.differs(resource, *changes.fixed)
    if not changes.to_set:
        aws.report.found(resource)
        return url, arn
    if first := clear_other_encryption(current, encryption):
        await aws("SetQueueAttributes", sqs.set_queue_attributes, QueueUrl=url, Attributes=first)
    try:
        await aws(
            "SetQueueAttributes",
            sqs.set_queue_attributes,
            expected=REFUSED_UPDATE,
            QueueUrl=url,
            # The policy always goes along: moto 5.2.5 clears a policy left out of the call.
            Attributes=changes.to_set | {"Policy": wanted["Policy"]},
        )
    except Refused as exc:
        message = str(exc.response.get("Error", {}).get("Message", ""))[:300]
        for setting, value in changes.to_set.items():
            found = f"{current.get(setting, '(absent)')}; SetQueueAttributes refused ({exc.code}:"
            aws.report.differs(resource, Mismatch(setting, value, f"{found} {message})"))
        return url, arn
    aws.report.updated(resource, *changes.to_set)
    log.info("provision.queue_updated", queue=name, attributes=sorted(changes.to_set))
    return url, arn


async def _queue_url(aws: _Aws, sqs: Any, name: str, attributes: dict[str, str]) -> str:
    """The queue's URL, created with `attributes` (all but its policy) if it was missing."""
    try:
        got = await aws("GetQueueUrl", sqs.get_queue_url, expected=NO_QUEUE, QueueName=name)
        return str(got["QueueUrl"])
    except Refused:
        pass
    try:
        created = await aws(
            "CreateQueue",
            sqs.create_queue,
            expected=QUEUE_EXISTS,
            QueueName=name,
            Attributes=attributes,
        )
    except Refused:  # made meanwhile (another provision): compared like any existing queue
        return str((await aws("GetQueueUrl", sqs.get_queue_url, QueueName=name))["QueueUrl"])
    aws.report.created(f"queue {name}")
    log.info("provision.queue_created", queue=name)
    return str(created["QueueUrl"])
