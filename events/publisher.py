"""A small async SQS publisher for services that emit user events."""

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from .errors import EventError, InvalidEvent
from .models import Event, SealedEvent, UserCreated, UserDeleted, UserUpdated
from .parse import parse_event, validate_event
from .sealing import Sealer, SealingUnavailable

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_ENTRIES", "PublishError", "PublishResult", "Publisher"]

log = logging.getLogger(__name__)

MAX_BATCH_ENTRIES: Final = 10  # SendMessageBatch limits
MAX_BATCH_BYTES: Final = 256 * 1024  # >= parse.MAX_BODY_BYTES: any valid body fits alone
_MAX_IDS_IN_MESSAGE: Final = 20

# Characters SQS allows in MessageDeduplicationId / MessageGroupId: alphanumerics
# and punctuation, i.e. printable ASCII without the space.
_SQS_ID = re.compile(r"[!-~]{1,128}")

_THROTTLING_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "KMS.ThrottlingException",
    }
)
_TRANSIENT_NETWORK_ERRORS: Final = (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)


def serialize(event: Event) -> str:
    """Compact JSON body of an event, the inverse of ``parse_event``.

    Unset fields are left out but explicit nulls (removals in a patch) are kept;
    ``type`` and ``schema_version`` are always written even when they were left
    to their defaults. It does not validate: the publisher parses its output.
    """
    # warnings=False: pydantic's serializer warnings quote the offending values.
    payload = event.model_dump(mode="json", exclude_unset=True, warnings=False)
    payload = {"type": event.type.value, "schema_version": event.schema_version, **payload}
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # SQS rejects these two noncharacters in a body; JSON can carry them escaped.
    return text.replace("\ufffe", "\\ufffe").replace("\uffff", "\\uffff")


def seal_body(sealed: SealedEvent) -> str:
    """Compact JSON body of a sealed envelope (``type`` and ``schema_version`` always written).

    An absent optional field (``trace_id``) is left out: the contract refuses it as null.
    """
    payload = sealed.model_dump(mode="json", warnings=False, exclude_none=True)
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":"))


@dataclass(frozen=True)
class PublishResult:
    """``sent``: messages SQS accepted; ``message_ids``: their SQS ids, in input order."""

    sent: int
    message_ids: tuple[str, ...] = ()


class PublishError(EventError):
    """Some events could not be sent. Lists event ids and SQS error codes, never bodies."""

    def __init__(
        self,
        failed_event_ids: Sequence[str],
        *,
        codes: Sequence[str] = (),
        result: PublishResult | None = None,
    ) -> None:
        self.failed_event_ids = tuple(failed_event_ids)
        self.codes = tuple(sorted(set(codes)))
        self.result = result if result is not None else PublishResult(sent=0)
        shown = ", ".join(repr(i) for i in self.failed_event_ids[:_MAX_IDS_IN_MESSAGE])
        more = len(self.failed_event_ids) - _MAX_IDS_IN_MESSAGE
        if more > 0:
            shown += f" and {more} more"
        super().__init__(
            f"{len(self.failed_event_ids)} event(s) not published "
            f"(errors: {', '.join(self.codes) or 'unknown'}): {shown}"
        )


@dataclass
class _Entry:
    index: int
    event_id: str
    request: dict[str, str]
    size: int
    model: Event


@dataclass
class _BatchOutcome:
    message_ids: dict[int, str] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)  # index -> error code


class _Retryable(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Permanent(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _is_transient(error: ClientError) -> bool:
    response: Mapping[str, Any] = getattr(error, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _THROTTLING_CODES or (
        isinstance(status, int) and (status >= 500 or status == 429)
    )


def _error_code(error: ClientError) -> str:
    response: Mapping[str, Any] = getattr(error, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", "") or type(error).__name__)


class Publisher:
    """Validates user events and sends them to one SQS queue in batches.

    ``sqs_client`` is an entered aiobotocore SQS client. For a FIFO queue the
    message group is the user id (per-user ordering) and the deduplication id is
    the event id, or its SHA-256 hex digest if it has characters SQS refuses.

    Batches go out one after another in input order. An event that fails (or is
    retried) does not hold back later events of the same user, so on PublishError
    a caller that needs strict per-user order should republish from the first
    failed event of each affected user; FIFO deduplication (5 minutes) absorbs
    the repeats.

    With ``sealer`` (an ``events.sealing.PayloadSealer``), each event's ``data``
    is sealed for the worker after validation: the queue only ever holds its
    ciphertext. Sealing calls KMS (rarely, thanks to the data-key cache) and runs
    on ``executor`` (the loop's default executor if None). If any event cannot be
    sealed, nothing is sent and PublishError lists them all.
    """

    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        *,
        max_attempts: int = 5,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        sealer: Sealer | None = None,
        executor: Executor | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._client = sqs_client
        self._queue_url = queue_url
        self._fifo = queue_url.endswith(".fifo")
        self._max_attempts = max_attempts
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._sealer = sealer
        self._executor = executor

    async def publish(self, events: Iterable[Event | Mapping[str, Any]]) -> PublishResult:
        """Validate all events, then send them; raise PublishError if any could not be sent.

        Nothing is sent when any event is invalid (InvalidEvent names its index).
        """
        entries = [self._entry(index, event) for index, event in enumerate(events)]
        if self._sealer is not None:
            await self._seal(entries, self._sealer)
        message_ids: dict[int, str] = {}
        failures: dict[int, str] = {}
        for batch in _batches(entries):
            outcome = await self._send_batch(batch)
            message_ids.update(outcome.message_ids)
            failures.update(outcome.failures)
        result = PublishResult(
            sent=len(message_ids),
            message_ids=tuple(message_ids[i] for i in sorted(message_ids)),
        )
        if failures:
            failed = sorted(failures)
            raise PublishError(
                [entries[i].event_id for i in failed],
                codes=[failures[i] for i in failed],
                result=result,
            )
        return result

    def _entry(self, index: int, event: Event | Mapping[str, Any]) -> _Entry:
        reason: str | None = None
        invalid: InvalidEvent | None = None
        try:
            if isinstance(event, UserCreated | UserUpdated | UserDeleted):
                model: Event = event
            elif isinstance(event, Mapping):
                model = validate_event(event)
            else:
                raise InvalidEvent("must be an event model or a mapping")
            body = serialize(model)
            # What consumers will run: also catches size limits and models that
            # were built with model_construct() or mutated after validation.
            parse_event(body)
        except InvalidEvent as exc:
            invalid = exc
            reason = f"events[{index}]: {exc.reason}"
        except (TypeError, ValueError):
            # json.dumps on a model holding non-JSON data; its message may quote values.
            reason = f"events[{index}]: cannot be serialized as JSON"
        if reason is not None:
            raise InvalidEvent(
                reason,
                event_id=invalid.event_id if invalid else None,
                event_type=invalid.event_type if invalid else None,
            )
        request = {"Id": str(index), "MessageBody": body}
        if self._fifo:
            request["MessageGroupId"] = model.user_id
            request["MessageDeduplicationId"] = (
                model.event_id
                if _SQS_ID.fullmatch(model.event_id)
                else hashlib.sha256(model.event_id.encode()).hexdigest()
            )
        return _Entry(index, model.event_id, request, len(body.encode()), model)

    async def _seal(self, entries: list[_Entry], sealer: Sealer) -> None:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, sealer.seal, e.model) for e in entries),
            return_exceptions=True,
        )
        failed = [(e, r) for e, r in zip(entries, results, strict=True) if isinstance(r, Exception)]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        if failed:
            raise PublishError(
                [entry.event_id for entry, _ in failed],
                codes=[
                    "SealingUnavailable" if isinstance(r, SealingUnavailable) else type(r).__name__
                    for _, r in failed
                ],
            )
        for entry, sealed in zip(entries, results, strict=True):
            assert isinstance(sealed, SealedEvent)
            body = seal_body(sealed)
            entry.request["MessageBody"] = body
            entry.size = len(body.encode())

    async def _send_batch(self, batch: list[_Entry]) -> _BatchOutcome:
        outcome = _BatchOutcome()
        pending = {entry.request["Id"]: entry for entry in batch}
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_random_exponential(multiplier=self._initial_backoff, max=self._max_backoff),
            retry=retry_if_exception_type(_Retryable),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(pending, outcome)
        except (_Retryable, _Permanent) as exc:
            for entry in pending.values():
                outcome.failures[entry.index] = exc.code
        return outcome

    async def _attempt(self, pending: dict[str, _Entry], outcome: _BatchOutcome) -> None:
        """Send the pending entries, settle what SQS answered, raise _Retryable for the rest."""
        try:
            response = await self._client.send_message_batch(
                QueueUrl=self._queue_url,
                Entries=[entry.request for entry in pending.values()],
            )
        except ClientError as exc:
            if _is_transient(exc):
                raise _Retryable(_error_code(exc)) from None
            raise _Permanent(_error_code(exc)) from None
        except _TRANSIENT_NETWORK_ERRORS as exc:
            raise _Retryable(type(exc).__name__) from None

        for success in response.get("Successful", []):
            entry = pending.pop(str(success.get("Id")), None)
            if entry is not None:
                outcome.message_ids[entry.index] = str(success.get("MessageId", ""))
        retry_code = ""
        for failure in response.get("Failed", []):
            entry_id = str(failure.get("Id"))
            if entry_id not in pending:
                continue
            code = str(failure.get("Code") or "unknown")
            if failure.get("SenderFault"):
                outcome.failures[pending.pop(entry_id).index] = code
            else:
                retry_code = code
        if pending:
            # Failed without SenderFault, or missing from the response altogether.
            raise _Retryable(retry_code or "missing from response")


def _batches(entries: list[_Entry]) -> Iterable[list[_Entry]]:
    """Consecutive runs of at most 10 entries and 256 KiB of bodies (order kept for FIFO)."""
    batch: list[_Entry] = []
    size = 0
    for entry in entries:
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + entry.size > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.size
    if batch:
        yield batch


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "retrying SQS send_message_batch",
        extra={"attempt": state.attempt_number, "code": getattr(error, "code", None)},
    )
