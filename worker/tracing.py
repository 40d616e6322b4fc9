"""Which trace a message belongs to, and the log context that carries it along the path.

The trace id comes, in order, from the event envelope (`trace_id`, set by the publisher), from
the `userstore.trace_id` message attribute (kept by `userstore dlq redrive`), from SQS's
`AWSTraceHeader` system attribute (X-Ray: its `Root`), or else is derived from the message id,
so that every receive of one message, on any replica, logs the same trace id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog

from .profile import Event

TRACE_ATTRIBUTE = "userstore.trace_id"
_TRACE = re.compile(r"[A-Za-z0-9._:/=-]{1,128}")
_XRAY_ROOT = re.compile(r"(?:^|;)Root=([A-Za-z0-9-]{1,64})(?:;|$)")
_DERIVED = uuid.UUID("5b0a4c1e-9d1f-4b7a-8f59-3c1f0d6e2a71")  # namespace for derived ids


def trace_id(raw: Mapping[str, Any], event: Event | None) -> str:
    """The trace id of one received SQS message (`raw`), given its event if it parsed."""
    if event is not None and event.trace_id:
        return event.trace_id
    attribute = raw.get("MessageAttributes", {}).get(TRACE_ATTRIBUTE, {}).get("StringValue")
    if isinstance(attribute, str) and _TRACE.fullmatch(attribute):
        return attribute
    header = raw.get("Attributes", {}).get("AWSTraceHeader")
    if isinstance(header, str):
        found = _XRAY_ROOT.search(header)
        if found:
            return found.group(1)
    return uuid.uuid5(_DERIVED, str(raw.get("MessageId", ""))).hex


@contextmanager
def message_context(message_id: str, event_id: str | None, trace: str) -> Iterator[None]:
    """Every log line inside the block, in this task, carries the three ids."""
    with structlog.contextvars.bound_contextvars(
        message_id=message_id, event_id=event_id, trace_id=trace
    ):
        yield
