"""From an SQS body to a validated event: unwrap (SNS, EventBridge), unseal, parse.

Shared by the long-running consumer (worker.sqs) and the Lambda handlers (worker.lambdas), so a
body is accepted or refused for the same reason whichever runs it. Also the dead-letter
annotation both of them write.

Unsealing is a synchronous aws-encryption-sdk call that may call KMS (on a decrypt-cache miss),
so it runs on the bounded crypto thread pool. The payload key is resolved lazily, on the first
sealed event: a deployment that never receives one never needs the key.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Executor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from events import Event, InvalidEvent, SealedEvent, read_message
from events.sealing import PayloadOpener, SealingUnavailable

from .aws import call
from .errors import KeyUnavailable, UserstoreError
from .logs import get_logger
from .metrics import Metrics
from .settings import Settings
from .tracing import TRACE_ATTRIBUTE

# The SDK logs tracebacks ("Footer not read", "Error on closing") for every refused payload; we
# translate each into one dead-letter reason or retry instead.
logging.getLogger("aws_encryption_sdk").setLevel(logging.CRITICAL)

log = get_logger("userstore.intake")

REASON_ATTRIBUTE = "userstore.reason"
ERROR_ATTRIBUTE = "userstore.error"
EVENT_ID_ATTRIBUTE = "userstore.event_id"
SOURCE_ID_ATTRIBUTE = "userstore.source_message_id"
RECEIVE_COUNT_ATTRIBUTE = "userstore.receive_count"
EVENT_TYPE_ATTRIBUTE = "userstore.event_type"


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


class PayloadKeyUnavailable(KeyUnavailable):
    """A sealed event that cannot be opened yet (KMS unreachable, throttling, key missing)."""

    def __init__(self, reason: str, event_id: str) -> None:
        super().__init__(reason)
        self.event_id = event_id


class LazyOpener:
    """A PayloadOpener for the configured key, built on first use (on the executor thread)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._opener: PayloadOpener | None = None
        self._lock = threading.Lock()

    def open(self, envelope: SealedEvent) -> Event:
        return self._get().open(envelope)

    def _get(self) -> PayloadOpener:
        with self._lock:
            if self._opener is None:
                self._opener = self._build()
            return self._opener

    def _build(self) -> PayloadOpener:
        s = self._settings
        config = Config(
            retries={"mode": "standard", "max_attempts": s.aws_max_attempts},
            max_pool_connections=s.crypto_threads,
            connect_timeout=s.aws_connect_timeout_s,
            read_timeout=s.aws_read_timeout_s,
        )
        kms = boto3.session.Session(region_name=s.aws_region).client(
            "kms", endpoint_url=s.aws_endpoint_url, config=config
        )
        try:
            arn = str(kms.describe_key(KeyId=s.payload_kms_key)["KeyMetadata"]["Arn"])
        except (ClientError, BotoCoreError) as exc:
            code = (
                str(exc.response.get("Error", {}).get("Code", ""))
                if isinstance(exc, ClientError)
                else type(exc).__name__
            )
            raise SealingUnavailable(f"payload key not available ({code})") from None
        return PayloadOpener(kms, arn, max_age_s=s.payload_key_cache_s)


class MessageReader:
    """The one parse step: body -> Event, or InvalidEvent (dead-letter) / KeyUnavailable (retry)."""

    def __init__(self, opener: Any | None, executor: Executor | None) -> None:
        self._opener = opener  # anything with open(SealedEvent) -> Event, called off the loop
        self._executor = executor

    async def read(self, body: str | bytes) -> Event:
        event = read_message(body).event
        if not isinstance(event, SealedEvent):
            return event
        if self._opener is None:
            raise InvalidEvent(
                "sealed: this consumer has no payload key",
                event_id=event.event_id,
                event_type=event.type.value,
            )
        loop = asyncio.get_running_loop()
        try:
            opened: Event = await loop.run_in_executor(self._executor, self._opener.open, event)
        except SealingUnavailable as exc:
            raise PayloadKeyUnavailable(exc.reason, event.event_id) from None
        return opened


class DeadLetterQueue:
    """Sends a message's body, untouched, to the dead-letter queue with why (no values)."""

    # FIFO dead-letter queues need a group; a message that had none (standard source) gets this.
    FALLBACK_GROUP = "userstore-dead-letters"

    def __init__(self, sqs: Any, url: str, max_attempts: int, metrics: Metrics) -> None:
        self._sqs = sqs
        self._url = url
        self._max_attempts = max_attempts
        self._metrics = metrics

    async def send(
        self,
        body: str,
        message_id: str,
        group: str | None,
        reason: str,
        error: str,
        event_id: str | None,
        **details: Any,
    ) -> bool:
        """True once SQS has it. `details`: trace_id, receive_count, event_type (attributes)."""
        extra: dict[str, Any] = {}
        if self._url.endswith(".fifo"):
            # Deduplicated on the source message id: a retried send never doubles it.
            extra = {
                "MessageGroupId": group or self.FALLBACK_GROUP,
                "MessageDeduplicationId": message_id,
            }
        try:
            await call(
                "SendMessage",
                self._sqs.send_message,
                max_attempts=self._max_attempts,
                QueueUrl=self._url,
                MessageBody=body,
                MessageAttributes=dead_letter_attributes(
                    reason, error, message_id, event_id, **details
                ),
                **extra,
            )
        except UserstoreError as exc:
            log.error("dead_letter.failed", message_id=message_id, error=exc.reason)
            return False
        self._metrics.dead_letters.labels(error).inc()
        log.warning(
            "message.dead_lettered",
            message_id=message_id,
            event_id=event_id,
            error=error,
            reason=reason,
        )
        return True


__all__ = [
    "ERROR_ATTRIBUTE",
    "EVENT_ID_ATTRIBUTE",
    "REASON_ATTRIBUTE",
    "SOURCE_ID_ATTRIBUTE",
    "DeadLetterQueue",
    "LazyOpener",
    "MessageReader",
    "PayloadKeyUnavailable",
    "dead_letter_attributes",
]
