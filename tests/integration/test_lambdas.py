"""The Lambda handlers against a moto server process, with real-shaped events.

SQS events are built from messages really received from moto's queue, turned into the shape a
Lambda event source mapping delivers. Stream events are the table's real stream records read
from moto, turned into Lambda's shape (B values base64, creation time in epoch seconds).
The handlers are synchronous (they run the container's own loop), so these tests are too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
import pytest

from tests.harness.settings import make_settings, provision_settings, settings_env
from tests.harness.sqs_queues import body
from userstore.events import parse_event
from userstore.events.publisher import seal_body
from userstore.events.sealing import PayloadSealer
from userstore.worker import lambdas, profile
from userstore.worker.app import components
from userstore.worker.errors import AwsUnavailable
from userstore.worker.inventory import inventory as key_usage
from userstore.worker.record import from_item
from userstore.worker.rotation import rotate_index_key, rotate_key
from userstore.worker.settings import Settings
from userstore.worker.sqs import (
    ERROR_ATTRIBUTE,
    EVENT_ID_ATTRIBUTE,
    REASON_ATTRIBUTE,
    RECEIVE_COUNT_ATTRIBUTE,
)
from userstore.worker.tracing import TRACE_ATTRIBUTE

SECRET = "Wilhelmina-Confidential-9"


def user() -> str:
    return f"urn:fdc:gov.uk:2022:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def configure(settings: Settings) -> None:
        for key, value in settings_env(settings).items():
            monkeypatch.setenv(key, value)

    yield configure
    lambdas.close_runtime()


def boto(settings: Settings, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region
    )


def lambda_sqs_event(sqs: Any, url: str, expected: int) -> dict[str, Any]:
    """Receive up to `expected` messages and shape them as Lambda's SQS event."""
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    messages: list[dict[str, Any]] = []
    for _ in range(20):
        response = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages += response.get("Messages", [])
        if len(messages) >= expected:
            break
    records = []
    for message in messages:
        attributes = {
            k: v
            for k, v in message["Attributes"].items()
            if k
            in {
                "ApproximateReceiveCount",
                "SentTimestamp",
                "SenderId",
                "ApproximateFirstReceiveTimestamp",
                "MessageGroupId",
                "MessageDeduplicationId",
                "SequenceNumber",
            }
        }
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": attributes,
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value["DataType"],
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": hashlib.md5(message["Body"].encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "eu-west-2",
            }
        )
    return {"Records": records}


def send(sqs: Any, url: str, text: str, group: str) -> str:
    extra = {}
    if url.endswith(".fifo"):
        extra = {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
    return str(sqs.send_message(QueueUrl=url, MessageBody=text, **extra)["MessageId"])


def dead_letters(sqs: Any, url: str) -> dict[str, dict[str, Any]]:
    found = {}
    for _ in range(5):
        for message in sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            attributes = message["MessageAttributes"]
            found[attributes[EVENT_ID_ATTRIBUTE]["StringValue"]] = {
                "body": message["Body"],
                "reason": attributes[REASON_ATTRIBUTE]["StringValue"],
                "error": attributes[ERROR_ATTRIBUTE]["StringValue"],
                "trace": attributes[TRACE_ATTRIBUTE]["StringValue"],
                "receives": attributes[RECEIVE_COUNT_ATTRIBUTE]["StringValue"],
            }
    return found


async def stored_view(settings: Settings, user_id: str) -> dict[str, Any] | None:
    async with components(settings) as parts:
        record = await parts.store.get(user_id)
        if record is None:
            return None
        return profile.view(from_item(await parts.cipher.open(record.item)))


def test_sqs_handler_reports_partial_failures_and_keeps_fifo_groups_in_order(
    moto_endpoint: str, lambda_env: Any
) -> None:
    # The worker's payload alias does not exist: a sealed event cannot be opened *yet*, a
    # retryable failure (as when KMS is unreachable).
    settings = asyncio.run(provision_settings(make_settings(moto_endpoint, fifo=True)))
    settings = settings.model_copy(update={"payload_kms_key": f"alias/absent-{uuid.uuid4().hex}"})
    lambda_env(settings)
    sqs = boto(settings, "sqs")
    url, dlq = (sqs.get_queue_url(QueueName=n)["QueueUrl"] for n in (settings.queue, settings.dlq))
    kms = boto(settings, "kms")
    sealer = PayloadSealer(kms, kms.create_key()["KeyMetadata"]["Arn"])

    blocked, free = user(), user()
    ids = {
        "a0": send(sqs, url, body("a0", "user.created", blocked, 0, {"given_name": "A"}), blocked),
        "a1": send(
            sqs,
            url,
            seal_body(sealer.seal(parse_event(body("a1", "user.updated", blocked, 1, {})))),
            blocked,
        ),
        "a2": send(sqs, url, body("a2", "user.updated", blocked, 2, {"family_name": "Z"}), blocked),
        "b0": send(sqs, url, body("b0", "user.created", free, 0, {"given_name": SECRET}), free),
        "b1": send(sqs, url, body("b1", "user.created", free, 1, {"email": SECRET}), free),
        "b2": send(sqs, url, body("b2", "user.updated", free, 2, {"family_name": SECRET}), free),
    }
    event = lambda_sqs_event(sqs, url, expected=6)
    assert len(event["Records"]) == 6

    response = lambdas.sqs_handler(event, None)

    # a1 failed (retryable), a2 waits behind it; b1 was invalid: dead-lettered, not failed.
    assert response == {
        "batchItemFailures": [{"itemIdentifier": ids["a1"]}, {"itemIdentifier": ids["a2"]}]
    }
    dead = dead_letters(sqs, dlq)
    assert set(dead) == {"b1"}
    assert dead["b1"]["reason"] == "data.email: not a valid email address"
    assert dead["b1"]["error"] == "InvalidMessage"
    assert SECRET not in dead["b1"]["reason"]
    assert dead["b1"]["receives"] == "1" and dead["b1"]["trace"]
    assert asyncio.run(stored_view(settings, blocked)) == {"given_name": "A"}
    assert asyncio.run(stored_view(settings, free)) == {
        "given_name": SECRET,
        "family_name": SECRET,
    }

    # The last allowed receive of a1: dead-lettered with why, reported done.
    last = {**event["Records"][1]}
    root = "1-5759e988-bd862e3fe1be46a994272793"
    last["attributes"] = {
        **last["attributes"],
        "ApproximateReceiveCount": "5",
        "AWSTraceHeader": f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1",
    }
    assert lambdas.sqs_handler({"Records": [last]}, None) == {"batchItemFailures": []}
    dead = dead_letters(sqs, dlq)
    assert dead["a1"]["reason"].startswith("gave up after 5 attempts: payload key not available")
    assert dead["a1"]["error"] == "PayloadKeyUnavailable"
    # The dead letter carries the trace (X-Ray root) and how often it was received.
    assert (dead["a1"]["trace"], dead["a1"]["receives"]) == (root, "5")


def test_sqs_handler_standard_queue_sns_and_sealed(moto_endpoint: str, lambda_env: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = asyncio.run(
        provision_settings(
            make_settings(moto_endpoint, fifo=False, payload_kms_key=f"alias/payload-{tag}")
        )
    )
    lambda_env(settings)
    sqs, sns = boto(settings, "sqs"), boto(settings, "sns")
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic = sns.create_topic(Name=f"users-{tag}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    kms = boto(settings, "kms")
    sealer = PayloadSealer(
        kms, kms.describe_key(KeyId=settings.payload_kms_key)["KeyMetadata"]["Arn"]
    )
    first, second = user(), user()
    sealed = seal_body(
        sealer.seal(parse_event(body("s1", "user.created", first, 0, {"given_name": SECRET})))
    )
    sns.publish(TopicArn=topic, Message=sealed)
    sns.publish(TopicArn=topic, Message=body("p1", "user.created", second, 0, {"family_name": "F"}))
    event = lambda_sqs_event(sqs, url, expected=2)
    assert lambdas.sqs_handler(event, None) == {"batchItemFailures": []}
    assert asyncio.run(stored_view(settings, first)) == {"given_name": SECRET}
    assert asyncio.run(stored_view(settings, second)) == {"family_name": "F"}


def lambda_stream_event(settings: Settings, stream_arn: str) -> dict[str, Any]:
    """Every record of the table's stream (moto: one shard), in Lambda's shape."""
    streams = boto(settings, "dynamodbstreams")
    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    records = []
    for shard in shards:
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records += streams.get_records(ShardIterator=iterator)["Records"]
    return {"Records": [_to_lambda_record(r, stream_arn) for r in records]}


def _lambda_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _lambda_json(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_lambda_json(v) for v in value]
    return value


def _to_lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    body = dict(record["dynamodb"])
    created = body.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        body["ApproximateCreationDateTime"] = int(created.timestamp())
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-2",
        "dynamodb": _lambda_json(body),
        "eventSourceARN": stream_arn,
    }


def test_streams_handler_reencrypts_records_under_a_retired_key(
    moto_endpoint: str, lambda_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = asyncio.run(provision_settings(make_settings(moto_endpoint, fifo=False)))
    lambda_env(settings)
    sqs = boto(settings, "sqs")
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    users = [user() for _ in range(4)]
    for n, user_id in enumerate(users):
        send(sqs, url, body(f"c{n}", "user.created", user_id, 0, {"given_name": SECRET}), user_id)
    assert lambdas.sqs_handler(lambda_sqs_event(sqs, url, expected=4), None) == {
        "batchItemFailures": []
    }
    new_key = boto(settings, "kms").create_key()["KeyMetadata"]["Arn"]

    async def rotate() -> None:
        async with components(settings) as parts:
            await rotate_key(parts, new_key)

    asyncio.run(rotate())
    stream_arn = boto(settings, "dynamodb").describe_table(TableName=settings.table)["Table"][
        "LatestStreamArn"
    ]
    event = lambda_stream_event(settings, stream_arn)
    assert any(
        isinstance(r["dynamodb"].get("NewImage", {}).get("key_ref"), dict) for r in event["Records"]
    )

    # A retryable failure on the third user's record: reported by its sequence number, and
    # nothing after it is touched (Lambda retries the batch from there).
    real = lambdas.reencrypt_if_stale
    failing = users[2]

    async def flaky(resealer: Any, target: Any, record: Any, metrics: Any) -> Any:
        if record.keys["user_id"]["S"] == failing:
            raise AwsUnavailable("injected")
        return await real(resealer, target, record, metrics)

    monkeypatch.setattr(lambdas, "reencrypt_if_stale", flaky)
    response = lambdas.streams_handler(event, None)
    failed = [
        r["dynamodb"]["SequenceNumber"]
        for r in event["Records"]
        if r["dynamodb"]["Keys"]["user_id"]["S"] == failing
    ]
    assert response == {"batchItemFailures": [{"itemIdentifier": failed[0]}]}

    monkeypatch.setattr(lambdas, "reencrypt_if_stale", real)
    assert lambdas.streams_handler(event, None) == {"batchItemFailures": []}

    async def usage() -> Any:
        async with components(settings) as parts:
            return await key_usage(parts)

    result = asyncio.run(usage())
    assert lambdas._runtime is not None
    assert lambdas._runtime.metrics.count("userstore_verification_failures") == 0
    assert str(result.active_key) == f"kms:{new_key}"
    assert result.stale == 0
    assert result.records_by_key == {f"kms:{new_key}": 4}  # control records are not counted
    for user_id in users:
        assert asyncio.run(stored_view(settings, user_id)) == {"given_name": SECRET}


def test_warm_sqs_container_follows_a_rotation(moto_endpoint: str, lambda_env: Any) -> None:
    settings = asyncio.run(
        provision_settings(make_settings(moto_endpoint, fifo=False, control_poll_s=0.2))
    )
    lambda_env(settings)
    sqs = boto(settings, "sqs")
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    before, after = user(), user()
    send(sqs, url, body("w1", "user.created", before, 0, {"given_name": "B"}), before)
    assert lambdas.sqs_handler(lambda_sqs_event(sqs, url, 1), None) == {"batchItemFailures": []}
    new_key = boto(settings, "kms").create_key()["KeyMetadata"]["Arn"]

    async def rotate() -> None:
        async with components(settings) as parts:
            await rotate_key(parts, new_key)

    asyncio.run(rotate())
    time.sleep(0.3)
    send(sqs, url, body("w2", "user.created", after, 0, {"given_name": "A"}), after)
    assert lambdas.sqs_handler(lambda_sqs_event(sqs, url, 1), None) == {"batchItemFailures": []}
    ddb = boto(settings, "dynamodb")
    refs = {
        u: ddb.get_item(TableName=settings.table, Key={"user_id": {"S": u}})["Item"]["key_ref"]["S"]
        for u in (before, after)
    }
    assert refs[after] == f"kms:{new_key}" != refs[before]


def test_sweep_handler_is_idle_without_a_job_and_follows_an_index_key_rotation(
    moto_endpoint: str, lambda_env: Any
) -> None:
    settings = asyncio.run(provision_settings(make_settings(moto_endpoint, fifo=False)))
    lambda_env(settings)
    users = [user() for _ in range(5)]

    async def load() -> None:
        async with components(settings) as parts:
            for n, user_id in enumerate(users):
                await parts.handler.handle(
                    parse_event(
                        body(f"c{n}", "user.created", user_id, 0, {"email": f"p{n}@example.org"})
                    )
                )

    asyncio.run(load())
    # No rotation since provisioning: nothing pending, nothing scanned (and the container warms).
    idle = lambdas.sweep_handler({}, None)
    assert (idle["status"], idle["pending"], idle["index_version"]) == ("done", False, 1)
    assert idle["run"]["scanned"] == 0
    # `force` scans anyway, and finds every record current.
    forced = lambdas.sweep_handler({"force": True}, None)
    assert (forced["status"], forced["run"]["scanned"], forced["run"]["current"]) == ("done", 5, 5)

    async def rotate_index() -> int:
        async with components(settings) as parts:
            return await rotate_index_key(parts)

    assert asyncio.run(rotate_index()) == 2
    # The warm container started with index key version 1: it must sweep towards version 2.
    swept = lambdas.sweep_handler({}, None)
    assert (swept["status"], swept["pending"], swept["index_version"]) == ("done", True, 2)
    assert swept["run"]["resealed"] == 5
    ddb = boto(settings, "dynamodb")
    for user_id in users:
        item = ddb.get_item(TableName=settings.table, Key={"user_id": {"S": user_id}})["Item"]
        assert item["email_idx"]["S"].startswith("2:")
    after = lambdas.sweep_handler({}, None)
    assert (after["status"], after["pending"], after["run"]["scanned"]) == ("done", False, 0)
