"""From an SQS body to a validated event: unwrap (SNS, EventBridge), unseal, parse.

Shared by the long-running consumer (worker.sqs) and the Lambda handlers (worker.lambdas), so a
body is accepted or refused for the same reason whichever runs it. The event contract's
InvalidEvent becomes the worker's InvalidMessage here: past this point only the worker's error
tree is raised.

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

from .errors import InvalidMessage, PayloadKeyUnavailable
from .settings import Settings

# The SDK logs tracebacks ("Footer not read", "Error on closing") for every refused payload; we
# translate each into one dead-letter reason or retry instead.
logging.getLogger("aws_encryption_sdk").setLevel(logging.CRITICAL)


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
    """What LazyOpener needs of the key service (worker.keyservice.KeyService)."""

    def resolve_payload_key(self) -> str: ...

    def sdk_kms(self) -> Any: ...


class MessageReader:
    """The one parse step: body -> Event, or InvalidMessage (dead-letter) / KeyUnavailable."""

    def __init__(self, opener: Any | None, executor: Executor | None) -> None:
        self._opener = opener  # anything with open(SealedEvent) -> Event, called off the loop
        self._executor = executor

    async def read(self, body: str | bytes) -> Event:
        """The event in `body`; InvalidMessage (dead-letter) or PayloadKeyUnavailable (retry)."""
        try:
            return await self._read(body)
        except InvalidEvent as exc:
            raise InvalidMessage(
                exc.reason, event_id=exc.event_id, event_type=exc.event_type
            ) from exc

    async def _read(self, body: str | bytes) -> Event:
        event = read_message(body).event
        if not isinstance(event, SealedEvent):
            return event
        if self._opener is None:
            raise InvalidMessage(
                "sealed: this consumer has no payload key",
                event_id=event.event_id,
                event_type=event.type.value,
            )
        loop = asyncio.get_running_loop()
        try:
            opened: Event = await loop.run_in_executor(self._executor, self._opener.open, event)
        except SealingUnavailable as exc:
            raise PayloadKeyUnavailable(exc.reason, event.event_id, event.type.value) from None
        return opened


__all__ = ["LazyOpener", "MessageReader"]
