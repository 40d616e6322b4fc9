"""`provision` creates everything once and is safe to run again."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import make_settings
from worker.app import aws_clients
from worker.provision import provision

pytestmark = pytest.mark.integration


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
