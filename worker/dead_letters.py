"""Dead-lettering a message: the body, untouched, to the dead-letter queue with why.

The annotation (`userstore.*` message attributes) names the reason, the error class and ids,
never a value: `userstore dlq list` (worker.dlq) reads it back without reading the body. Shared
by the consumer (worker.sqs) and the Lambda batch (worker.lambdas).
"""

from __future__ import annotations

from typing import Any

from .errors import UserstoreError
from .logs import get_logger
from .metrics import Metrics
from .ports import OutgoingMessage, Queue, QueueMessage
from .tracing import TRACE_ATTRIBUTE

log = get_logger("userstore.dead_letters")

REASON_ATTRIBUTE = "userstore.reason"
ERROR_ATTRIBUTE = "userstore.error"
EVENT_ID_ATTRIBUTE = "userstore.event_id"
SOURCE_ID_ATTRIBUTE = "userstore.source_message_id"
RECEIVE_COUNT_ATTRIBUTE = "userstore.receive_count"
EVENT_TYPE_ATTRIBUTE = "userstore.event_type"

# FIFO dead-letter queues need a group; a message that had none (standard source) gets this.
FALLBACK_GROUP = "userstore-dead-letters"


def dead_letter_attributes(
    reason: str,
    error: str,
    source_message_id: str,
    event_id: str | None,
    *,
    trace_id: str | None = None,
    receive_count: int | None = None,
    event_type: str | None = None,
) -> dict[str, Any]:
    """SQS message attributes saying why a message was dead-lettered (no values, only names)."""
    attributes = {
        REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:1000]},
        ERROR_ATTRIBUTE: {"DataType": "String", "StringValue": error},
        SOURCE_ID_ATTRIBUTE: {"DataType": "String", "StringValue": source_message_id},
    }
    optional = {
        EVENT_ID_ATTRIBUTE: event_id,
        TRACE_ATTRIBUTE: trace_id,
        EVENT_TYPE_ATTRIBUTE: event_type,
    }
    for name, value in optional.items():
        if value:
            attributes[name] = {"DataType": "String", "StringValue": value}
    if receive_count is not None:
        attributes[RECEIVE_COUNT_ATTRIBUTE] = {
            "DataType": "Number",
            "StringValue": str(receive_count),
        }
    return attributes


class DeadLetterSender:
    """Sends a message's body, untouched, to the dead-letter queue with why (no values)."""

    def __init__(self, queue: Queue, metrics: Metrics) -> None:
        self._queue = queue
        self._metrics = metrics

    async def send(
        self,
        message: QueueMessage,
        reason: str,
        error: str,
        event_id: str | None,
        *,
        trace_id: str | None,
        event_type: str | None = None,
    ) -> bool:
        """True once SQS has it; False (logged) when the send failed."""
        attributes = dead_letter_attributes(
            reason,
            error,
            message.id,
            event_id,
            trace_id=trace_id,
            receive_count=message.receive_count,
            event_type=event_type,
        )
        outgoing = OutgoingMessage(message.body, attributes)
        if self._queue.fifo:
            # Deduplicated on the source message id: a retried send never doubles it.
            outgoing = OutgoingMessage(
                message.body, attributes, message.group or FALLBACK_GROUP, message.id
            )
        try:
            await self._queue.send(outgoing)
        except UserstoreError as exc:
            log.error("dead_letter.failed", message_id=message.id, error=exc.reason)
            return False
        self._metrics.dead_letters.labels(error).inc()
        log.warning(
            "message.dead_lettered",
            message_id=message.id,
            event_id=event_id,
            error=error,
            reason=reason,
        )
        return True
