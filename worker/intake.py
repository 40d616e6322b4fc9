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
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any, Protocol

from userstore.events import Event, InvalidEvent, SealedEvent, read_message
from userstore.events.sealing import PayloadOpener, SealingUnavailable

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
    """PayloadOpeners for the payload keys in force, built on first use (on the executor thread).

    After a payload-key rotation, messages sealed under the previous key may still sit in the
    queue or the dead-letter queue: every key in `accept` opens, the active one tried first.
    """

    def __init__(self, settings: Settings, keys: PayloadKeys) -> None:
        self._settings = settings
        self._keys = keys
        self._active: str | None = None  # resolved from the alias on first use
        self._previous: tuple[str, ...] = ()
        self._openers: dict[str, PayloadOpener] = {}
        self._lock = threading.Lock()

    def accept(self, active_arn: str | None, previous_arns: Iterable[str]) -> None:
        """The payload key now active (None: ask the alias) and earlier ones still accepted."""
        with self._lock:
            self._active = active_arn
            self._previous = tuple(previous_arns)

    def open(self, envelope: SealedEvent) -> Event:
        first: InvalidEvent | None = None
        for opener in self._get():
            try:
                return opener.open(envelope)
            except InvalidEvent as exc:  # not under this key, or tampered: try the others
                first = first or exc
        assert first is not None
        raise first

    def _get(self) -> list[PayloadOpener]:
        with self._lock:
            if self._active is None:
                self._active = self._keys.resolve_payload_key()
            wanted = [self._active, *(arn for arn in self._previous if arn != self._active)]
            for arn in wanted:
                if arn not in self._openers:
                    self._openers[arn] = PayloadOpener(
                        self._keys.sdk_kms(), arn, max_age_s=self._settings.payload_key_cache_s
                    )
            return [self._openers[arn] for arn in wanted]


class PayloadKeys(Protocol):
    """What LazyOpener needs of the key service (worker.adapters.kms.KeyService)."""

    def resolve_payload_key(self) -> str: ...

    def sdk_kms(self) -> Any: ...


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
