"""`provision` creates everything once and is safe to run again; it brings existing resources in
line with the definition, each setting read back from the emulator."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.harness.settings import make_settings
from userstore.worker.app import aws_clients
from userstore.worker.provision import TABLE_EXTRAS, provision
from userstore.worker.resources import definition, render, setting_values
from userstore.worker.settings import QueueEncryption


@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "standard"])
async def test_provision_twice_gives_the_same_resources(moto_endpoint: str, fifo: bool) -> None:
    settings = make_settings(moto_endpoint, fifo=fifo)
    async with aws_clients(settings) as clients:
        first = await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        second = await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        assert first == second
        table = (await clients.dynamodb.describe_table(TableName=settings.table))["Table"]
        assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["email-index"]
        ttl = await clients.dynamodb.describe_time_to_live(TableName=settings.table)
        assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
        for name in (settings.meta_table, settings.state_table):
            await clients.dynamodb.describe_table(TableName=name)
        attrs = (
            await clients.sqs.get_queue_attributes(QueueUrl=first.queue_url, AttributeNames=["All"])
        )["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert int(redrive["maxReceiveCount"]) == settings.max_receive_count
        assert redrive["deadLetterTargetArn"].endswith(settings.dlq)
        assert attrs.get("FifoQueue", "false") == ("true" if fifo else "false")
        alias = await clients.kms.describe_key(KeyId=settings.kms_key)
        assert alias["KeyMetadata"]["Arn"] == first.key_arn


async def test_provision_creates_a_separate_payload_key(moto_endpoint: str) -> None:
    alias = f"alias/payload-{uuid.uuid4().hex[:8]}"
    settings = make_settings(moto_endpoint, payload_kms_key=alias)
    async with aws_clients(settings) as clients:
        first = await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        payload = await clients.kms.describe_key(KeyId=settings.payload_kms_key)
        assert payload["KeyMetadata"]["Arn"] == first.payload_key_arn != first.key_arn
        assert payload["KeyMetadata"]["Description"] == "userstore event payloads"
        again = await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        assert again.payload_key_arn == first.payload_key_arn


async def _queue(clients: Any, url: str) -> dict[str, str]:
    got = await clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    return dict(got["Attributes"])


async def _pitr(clients: Any, table: str) -> str:
    got = await clients.dynamodb.describe_continuous_backups(TableName=table)
    return str(
        got["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
            "PointInTimeRecoveryStatus"
        ]
    )


def _denies_plain_http(policy: str, arn: str) -> None:
    [statement] = json.loads(policy)["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert statement["Action"] == "sqs:*" and statement["Resource"] == arn
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


async def test_everything_is_encrypted_at_rest_under_the_storage_key(moto_endpoint: str) -> None:
    alias = f"alias/storage-{uuid.uuid4().hex[:8]}"
    settings = make_settings(moto_endpoint, storage_kms_key=alias)
    async with aws_clients(settings) as clients:
        done = await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        storage = (await clients.kms.describe_key(KeyId=alias))["KeyMetadata"]
        assert storage["Arn"] == done.storage_key_arn
        assert done.storage_key_arn not in (done.key_arn, done.payload_key_arn)
        for name in (settings.table, settings.meta_table, settings.state_table):
            table = (await clients.dynamodb.describe_table(TableName=name))["Table"]
            assert table["SSEDescription"] == {
                "Status": "ENABLED",
                "SSEType": "KMS",
                "KMSMasterKeyArn": done.storage_key_arn,
            }, name
            assert table["DeletionProtectionEnabled"] is (name == settings.table)
            assert await _pitr(clients, name) == "ENABLED"  # the default
        for url in (done.queue_url, done.dlq_url):
            attrs = await _queue(clients, url)
            assert attrs["KmsMasterKeyId"] == done.storage_key_arn
            assert attrs["KmsDataKeyReusePeriodSeconds"] == "300"
            assert attrs["SqsManagedSseEnabled"] == "false"
            _denies_plain_http(attrs["Policy"], attrs["QueueArn"])
        with pytest.raises(ClientError, match="DeletionProtectionEnabled"):
            await clients.dynamodb.delete_table(TableName=settings.table)


async def test_sqs_managed_encryption_and_no_point_in_time_recovery(moto_endpoint: str) -> None:
    settings = make_settings(
        moto_endpoint, queue_encryption=QueueEncryption.SQS, point_in_time_recovery=False
    )
    async with aws_clients(settings) as clients:
        done = await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        for url in (done.queue_url, done.dlq_url):
            attrs = await _queue(clients, url)
            assert attrs["SqsManagedSseEnabled"] == "true"
            assert not attrs.get("KmsMasterKeyId")
            _denies_plain_http(attrs["Policy"], attrs["QueueArn"])
        for name in (settings.table, settings.meta_table, settings.state_table):
            assert await _pitr(clients, name) == "DISABLED"


async def test_provision_puts_hand_made_changes_right(moto_endpoint: str) -> None:
    """Provision, change each setting by hand, provision again: read back as configured."""
    settings = make_settings(moto_endpoint)
    async with aws_clients(settings) as clients:
        done = await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        ddb, sqs = clients.dynamodb, clients.sqs
        await ddb.update_table(TableName=settings.table, DeletionProtectionEnabled=False)
        off = {"PointInTimeRecoveryEnabled": False}
        for name in (settings.table, settings.meta_table, settings.state_table):
            await ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification=off
            )
        other = (await clients.kms.create_key(Description="not ours"))["KeyMetadata"]["Arn"]
        # The dead-letter queue too: it used to get its attributes only when created.
        for url in (done.queue_url, done.dlq_url):
            await sqs.set_queue_attributes(
                QueueUrl=url,
                Attributes={"KmsMasterKeyId": other, "KmsDataKeyReusePeriodSeconds": "86400"},
            )
            await sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": ""})
            assert "Policy" not in await _queue(clients, url)
        await sqs.set_queue_attributes(
            QueueUrl=done.dlq_url, Attributes={"MessageRetentionPeriod": "60"}
        )

        again = await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        assert again == done
        users = (await ddb.describe_table(TableName=settings.table))["Table"]
        assert users["DeletionProtectionEnabled"] is True
        for name in (settings.table, settings.meta_table, settings.state_table):
            assert await _pitr(clients, name) == "ENABLED"
        for url in (done.queue_url, done.dlq_url):
            attrs = await _queue(clients, url)
            assert attrs["KmsMasterKeyId"] == done.storage_key_arn
            assert attrs["KmsDataKeyReusePeriodSeconds"] == "300"
            _denies_plain_http(attrs["Policy"], attrs["QueueArn"])
        assert (await _queue(clients, done.dlq_url))["MessageRetentionPeriod"] == "1209600"

        # The operator's choice changes: SSE-SQS on both queues, point-in-time recovery off.
        changed = settings.model_copy(
            update={"queue_encryption": QueueEncryption.SQS, "point_in_time_recovery": False}
        )
        await provision(changed, clients.kms, clients.dynamodb, clients.sqs)
        for url in (done.queue_url, done.dlq_url):
            attrs = await _queue(clients, url)
            assert attrs["SqsManagedSseEnabled"] == "true"
            assert not attrs.get("KmsMasterKeyId")
        for name in (settings.table, settings.meta_table, settings.state_table):
            assert await _pitr(clients, name) == "DISABLED"


async def test_a_table_from_before_is_encrypted_and_protected(moto_endpoint: str) -> None:
    """A users table made before this definition (default encryption, unprotected): provision
    turns on deletion protection and asks for SSE under the storage key. moto 5.2.5 ignores
    SSESpecification on update_table, so only protection can be read back here; the SSE update
    itself is decided by resources.table_updates (unit-tested) and read back on ministack by
    tests/e2e/test_localstack_hooks.py."""
    settings = make_settings(moto_endpoint)
    users = render(definition()["tables"][0], setting_values(settings) | {"storage_key_arn": ""})
    old = {k: v for k, v in users.items() if k not in TABLE_EXTRAS}
    del old["SSESpecification"], old["DeletionProtectionEnabled"]
    async with aws_clients(settings) as clients:
        await clients.dynamodb.create_table(**old)
        await provision(settings, clients.kms, clients.dynamodb, clients.sqs)
        table = (await clients.dynamodb.describe_table(TableName=settings.table))["Table"]
        assert table["DeletionProtectionEnabled"] is True
        assert await _pitr(clients, settings.table) == "ENABLED"
