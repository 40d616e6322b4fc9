"""What Lambda's event source mappings hand over, in the worker's own types (pure).

An SQS record is not the SQS API's message (other key names, attributes flattened), and a
DynamoDB Streams record carries binary attributes as base64 text where the SDKs hand out bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from .ports import QueueMessage
from .streams import StreamRecord
from .tracing import TRACE_ATTRIBUTE


def message_from_lambda(raw: Mapping[str, Any]) -> QueueMessage:
    """One record of a Lambda SQS event (the event source mapping's shape, not the SQS API's)."""
    attributes = raw.get("attributes", {})
    group = attributes.get("MessageGroupId")
    kept = raw.get("messageAttributes", {}).get(TRACE_ATTRIBUTE, {}).get("stringValue")
    return QueueMessage(
        id=str(raw["messageId"]),
        body=str(raw.get("body", "")),
        receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
        group=None if group is None else str(group),
        # What the trace id may come from when the event names none (see worker.tracing).
        attributes={TRACE_ATTRIBUTE: {"DataType": "String", "StringValue": kept}},
        trace_header=attributes.get("AWSTraceHeader"),
    )


def _from_lambda_json(value: Any) -> Any:
    """Lambda's DynamoDB JSON carries B and BS as base64 text; the SDKs hand out bytes."""
    if not isinstance(value, Mapping):
        return value
    converted: dict[str, Any] = {}
    for kind, inner in value.items():
        if kind == "B":
            converted[kind] = base64.b64decode(inner)
        elif kind == "BS":
            converted[kind] = [base64.b64decode(v) for v in inner]
        elif kind == "M":
            converted[kind] = {k: _from_lambda_json(v) for k, v in inner.items()}
        elif kind == "L":
            converted[kind] = [_from_lambda_json(v) for v in inner]
        else:
            converted[kind] = inner
    return converted


def _image(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if raw is None else {k: _from_lambda_json(v) for k, v in raw.items()}


def stream_record_from_lambda(raw: Mapping[str, Any]) -> StreamRecord:
    body = raw["dynamodb"]
    converted = {
        "eventName": raw["eventName"],
        "dynamodb": {
            "Keys": _image(body.get("Keys")) or {},
            "NewImage": _image(body.get("NewImage")),
            "OldImage": _image(body.get("OldImage")),
            "SequenceNumber": body["SequenceNumber"],
            "ApproximateCreationDateTime": body.get("ApproximateCreationDateTime", 0),
        },
    }
    # eventSourceARN names the stream, not the shard; the shard is only used in log lines.
    return StreamRecord.from_raw(converted, shard_id="lambda")
