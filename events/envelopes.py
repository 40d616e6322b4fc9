"""Events that arrive wrapped, and events whose data is sealed: ``read_message``, ``open_sealed``.

An SQS body is one of:

- a direct event (also what SNS *raw* delivery puts on the queue: the published body itself,
  with the SNS message attributes turned into SQS message attributes);
- an SNS notification (non-raw delivery): ``{"Type": "Notification", "MessageId", "TopicArn",
  "Message": "<the event as a JSON string>", ...}``. Only ``Type: Notification`` carries events
  (a SubscriptionConfirmation is refused). Signatures are not verified: the queue policy decides
  which topics may send, as it decides which publishers may;
- an EventBridge event delivered by a rule's SQS target: ``{"version", "id", "detail-type",
  "source", "detail": {<the event>}, ...}``. Accepted: ``detail-type`` is one of the event types
  and equals ``detail.type``; ``source`` is any publisher name except the ``aws.`` namespace
  (events AWS services emit are never user events).

Which one it is follows from the keys, unambiguously: a direct event forbids unknown fields, so
it never has ``Type``, ``TopicArn``, ``detail`` or ``detail-type``. The inner event goes through
exactly the validation of a direct one; reasons name the wrapper and the field, never values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from pydantic import ValidationError

from .errors import InvalidEvent
from .models import Event, EventType, SealedEvent
from .parse import _load_object, _safe_event_id, format_errors, validate_event

__all__ = ["Incoming", "Wrapper", "open_sealed", "read_message", "sealed_plaintext"]

_EVENT_TYPES: Final = frozenset(t.value for t in EventType)
_SNS_STRING_FIELDS: Final = ("MessageId", "TopicArn", "Message")


class Wrapper(StrEnum):
    DIRECT = "direct"
    SNS = "sns notification"
    EVENTBRIDGE = "eventbridge event"


@dataclass(frozen=True)
class Incoming:
    """A validated message: the event, or the envelope of a sealed one still to be opened."""

    wrapper: Wrapper
    event: Event | SealedEvent


def read_message(body: str | bytes) -> Incoming:
    """Unwrap and validate one SQS body; raise InvalidEvent with a safe reason."""
    obj = _load_object(body)
    if "Type" in obj or "TopicArn" in obj:
        return Incoming(Wrapper.SNS, _from_sns(obj))
    if "detail" in obj or "detail-type" in obj:
        return Incoming(Wrapper.EVENTBRIDGE, _from_eventbridge(obj))
    return Incoming(Wrapper.DIRECT, _validate(obj, ""))


def _from_sns(obj: dict[str, Any]) -> Event | SealedEvent:
    prefix = f"{Wrapper.SNS}: "
    if obj.get("Type") != "Notification":
        raise InvalidEvent(f"{prefix}Type: only Notification messages carry events")
    for name in _SNS_STRING_FIELDS:
        if not isinstance(obj.get(name), str):
            raise InvalidEvent(f"{prefix}{name}: {_missing_or('must be a string', obj, name)}")
    reason = ""
    try:
        inner = _load_object(obj["Message"])
    except InvalidEvent as exc:
        reason = exc.reason.replace("body", "Message", 1)
    if reason:
        raise InvalidEvent(f"{prefix}{reason}")
    return _validate(inner, f"{prefix}Message: ")


def _from_eventbridge(obj: dict[str, Any]) -> Event | SealedEvent:
    prefix = f"{Wrapper.EVENTBRIDGE}: "
    source, detail_type, detail = obj.get("source"), obj.get("detail-type"), obj.get("detail")
    if not isinstance(source, str) or not source:
        raise InvalidEvent(
            f"{prefix}source: {_missing_or('must be a non-empty string', obj, 'source')}"
        )
    if source.startswith("aws."):
        raise InvalidEvent(f"{prefix}source: events of AWS services are not user events")
    if detail_type not in _EVENT_TYPES:
        expected = ", ".join(sorted(_EVENT_TYPES))
        what = _missing_or(f"must be an event type ({expected})", obj, "detail-type")
        raise InvalidEvent(f"{prefix}detail-type: {what}")
    if not isinstance(detail, dict):
        raise InvalidEvent(f"{prefix}detail: {_missing_or('must be an object', obj, 'detail')}")
    event = _validate(detail, f"{prefix}detail: ")
    if event.type != detail_type:
        raise InvalidEvent(
            f"{prefix}detail-type: does not match detail.type",
            event_id=event.event_id,
            event_type=event.type.value,
        )
    return event


def _missing_or(message: str, obj: Mapping[str, Any], name: str) -> str:
    return "field required" if name not in obj else message


def _validate(obj: dict[str, Any], prefix: str) -> Event | SealedEvent:
    invalid: InvalidEvent | None = None
    if "sealed" in obj:
        reason = ""
        try:
            return SealedEvent.model_validate(obj)
        except ValidationError as exc:
            reason = format_errors(exc)
        named = obj.get("type")  # a valid type is named in the dead letter, as for a plain event
        invalid = InvalidEvent(
            reason,
            event_id=_safe_event_id(obj.get("event_id")),
            event_type=named if isinstance(named, str) and named in _EVENT_TYPES else None,
        )
    else:
        try:
            return validate_event(obj)
        except InvalidEvent as exc:
            invalid = exc
    raise InvalidEvent(
        prefix + invalid.reason, event_id=invalid.event_id, event_type=invalid.event_type
    )


def open_sealed(envelope: SealedEvent, plaintext: bytes) -> Event:
    """The event a sealed envelope stands for, validated exactly as a direct one.

    ``plaintext`` is the unsealed JSON of ``data``; the caller has already checked that the
    encryption context names this envelope's event_id, user_id, type and occurred_at.
    """
    reason = ""
    data: Any = None
    try:
        # Parsed with the body parser's guards (depth, duplicate keys, NaN, huge integers).
        data = None if plaintext.strip() == b"null" else _load_object(plaintext)
    except InvalidEvent as exc:
        reason = exc.reason.replace("body", "sealed data", 1)
    if reason:
        raise InvalidEvent(reason, event_id=envelope.event_id, event_type=envelope.type.value)
    fields = envelope.model_dump(mode="json", exclude={"sealed"}, exclude_none=True)
    return validate_event({**fields, "data": data})


def sealed_plaintext(event: Event) -> bytes:
    """What a publisher seals: the compact JSON of ``data``, as ``serialize`` writes it."""
    payload = event.model_dump(mode="json", exclude_unset=True, warnings=False, include={"data"})
    text = json.dumps(payload.get("data"), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")
