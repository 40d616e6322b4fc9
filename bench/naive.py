"""The naive baseline: what the spike built, as its own process (`python -m bench.naive`).

A synchronous loop, one message at a time: boto3 receive (one message), json.loads, then
dynamodb-encryption-sdk's EncryptedTable: put_item for a create, get_item + dict merge +
put_item for an update (no duplicate detection, so a duplicate is re-applied), delete_item for a
delete; then delete_message. The materials provider is the worker's for the same key mode: a
fresh KMS data key per item (`kms`) or the meta store's cached materials (`cached`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
from botocore.config import Config
from dynamodb_encryption_sdk.encrypted.table import EncryptedTable
from dynamodb_encryption_sdk.material_providers.aws_kms import AwsKmsCryptographicMaterialsProvider
from dynamodb_encryption_sdk.material_providers.most_recent import CachingMostRecentProvider
from dynamodb_encryption_sdk.material_providers.store.meta import MetaStore

from bench.probe import Probe


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def encrypted_table(session: Any, endpoint: str, config: Config) -> EncryptedTable:
    """dynamodb-encryption-sdk's table over the bench's user table, with the materials provider
    of the key mode (`BENCH_KEY_MODE`)."""
    kms = session.client("kms", endpoint_url=endpoint, config=config)
    resource = session.resource("dynamodb", endpoint_url=endpoint, config=config)
    key_arn = os.environ["BENCH_KEY_ARN"]
    kms_provider = AwsKmsCryptographicMaterialsProvider(
        key_id=key_arn, regional_clients={key_arn.split(":")[3]: kms}
    )
    provider: Any = kms_provider
    if os.environ["BENCH_KEY_MODE"] == "cached":
        store = MetaStore(resource.Table(os.environ["BENCH_META_TABLE"]), kms_provider)
        provider = CachingMostRecentProvider(store, "naive", 300.0)
    return EncryptedTable(
        table=resource.Table(os.environ["BENCH_TABLE"]), materials_provider=provider
    )


def apply(table: EncryptedTable, event: dict[str, Any]) -> None:
    """Put a create, get + merge + put an update, delete a delete."""
    key = {"user_id": event["user_id"]}
    if event["type"] == "user.created":
        table.put_item(Item={**event["data"], **key})
    elif event["type"] == "user.updated":
        current = table.get_item(Key=key, ConsistentRead=True).get("Item", key)
        table.put_item(Item=_merge(current, event["data"]))
    else:
        table.delete_item(Key=key)


def main() -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    config = Config(retries={"max_attempts": 3, "mode": "standard"})
    session = boto3.session.Session()
    sqs = session.client("sqs", endpoint_url=endpoint, config=config)
    table = encrypted_table(session, endpoint, config)
    queue_url = os.environ["BENCH_QUEUE_URL"]
    settled = 0
    probe = Probe(lambda: settled)
    probe.start()
    while True:
        response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            apply(table, json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            settled += 1


if __name__ == "__main__":
    main()
