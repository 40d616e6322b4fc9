"""bench.powertools plays Lambda's event source mapping: the event it hands the handler, and
what it deletes after the partial batch response (pure)."""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes import SQSEvent

from bench.powertools import lambda_sqs_event, succeeded

ARN = "arn:aws:sqs:eu-west-2:123456789012:bench-q.fifo"


def message(n: int) -> dict[str, object]:
    return {
        "MessageId": f"m{n}",
        "ReceiptHandle": f"r{n}",
        "Body": '{"event_id": "e"}',
        "MD5OfBody": "x",
        "Attributes": {"MessageGroupId": "u1", "ApproximateReceiveCount": "1"},
    }


def test_messages_become_a_lambda_sqs_event_powertools_reads() -> None:
    event = lambda_sqs_event([message(1), message(2)], ARN)
    records = list(SQSEvent(event).records)
    assert [r.message_id for r in records] == ["m1", "m2"]
    assert records[0].receipt_handle == "r1"
    assert records[0].attributes.message_group_id == "u1"
    assert records[0].event_source_arn == ARN and records[0].aws_region == "eu-west-2"


def test_only_what_the_partial_batch_response_did_not_fail_is_deleted() -> None:
    event = lambda_sqs_event([message(1), message(2), message(3)], ARN)
    response = {"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]}
    assert succeeded(event, response) == ["r1"]
    assert succeeded(event, {"batchItemFailures": []}) == ["r1", "r2", "r3"]
