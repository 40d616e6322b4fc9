"""The consumer a team would build today on Lambda: `python -m bench.powertools`.

Powertools for AWS Lambda (Python): its SQS batch processor with partial batch responses (the
FIFO flavour, `SqsFifoPartialProcessor`, a `BatchProcessor` that stops a batch at its first
failure, as a FIFO queue needs) and its idempotency utility on DynamoDB
(`DynamoDBPersistenceLayer`, keyed on the event id), around dynamodb-encryption-sdk's
`EncryptedTable` for the record (bench.naive's `apply`: put, get + merge + put, delete; the
materials provider of the key mode). A loop plays Lambda's event source mapping: receive up to
ten messages, hand the handler a Lambda-shaped SQS event, delete what it reports as succeeded.
One invocation at a time, as one Lambda instance on a FIFO queue's event source.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import boto3
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from botocore.config import Config

from bench.naive import apply, encrypted_table
from bench.probe import Probe

REGION = "eu-west-2"


def lambda_sqs_event(messages: list[Mapping[str, Any]], queue_arn: str) -> dict[str, Any]:
    """SQS API messages (ReceiveMessage with all attributes) in the shape Lambda's event source
    mapping hands a function: other key names, the attributes flattened."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes", {})),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": queue_arn.split(":")[3],
            }
            for m in messages
        ]
    }


def succeeded(event: Mapping[str, Any], response: Mapping[str, Any]) -> list[str]:
    """The receipt handles of the records the partial batch response did not report failed."""
    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
    return [r["receiptHandle"] for r in event["Records"] if r["messageId"] not in failed]


class Context:
    """What Powertools reads of a Lambda context."""

    function_name = "bench-powertools"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:bench-powertools"

    def __init__(self) -> None:
        self.aws_request_id = uuid.uuid4().hex
        self._deadline = time.monotonic() + 30

    def get_remaining_time_in_millis(self) -> int:
        return int(1000 * (self._deadline - time.monotonic()))


def main() -> None:
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    config = Config(retries={"max_attempts": 3, "mode": "standard"})
    session = boto3.session.Session()
    sqs = session.client("sqs", endpoint_url=endpoint, config=config)
    table = encrypted_table(session, endpoint, config)
    persistence = DynamoDBPersistenceLayer(
        table_name=os.environ["BENCH_IDEMPOTENCY_TABLE"],
        boto3_client=session.client("dynamodb", endpoint_url=endpoint, config=config),
    )
    idempotency = IdempotencyConfig(event_key_jmespath="event_id")
    processor = SqsFifoPartialProcessor()

    @idempotent_function(  # type: ignore[untyped-decorator]
        data_keyword_argument="event", config=idempotency, persistence_store=persistence
    )
    def handle(event: dict[str, Any]) -> dict[str, str]:
        apply(table, event)
        return {"applied": event["event_id"]}

    def record_handler(record: SQSRecord) -> None:
        handle(event=json.loads(record.body))

    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        idempotency.register_lambda_context(context)
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        return dict(response)

    queue_url = os.environ["BENCH_QUEUE_URL"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    settled = 0
    probe = Probe(lambda: settled)
    probe.start()
    while True:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            continue
        event = lambda_sqs_event(messages, queue_arn)
        done = succeeded(event, lambda_handler(event, Context()))
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(done[start : start + 10])
            ]
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        settled += len(done)


if __name__ == "__main__":
    main()
