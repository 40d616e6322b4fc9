"""The one entry point for incoming messages: ``parse_event``.

Bodies come from other services and hold personal data, so every rejection
reason is assembled from field paths and a fixed message table, never from
input values or from library messages (which may quote the input). Exceptions
are raised outside ``except`` blocks so that no chained ``__context__`` (a
pydantic ``ValidationError`` or ``JSONDecodeError`` holding the input) can
reach a log.
"""

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from .errors import InvalidEvent
from .fields import EventId
from .limits import ATTRIBUTE_NAME_PATTERN, SUPPORTED_SCHEMA_VERSIONS
from .models import (
    Event,
    EventType,
    UserCreated,
    UserDeleted,
    UserUpdated,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_REASON_LENGTH",
    "format_errors",
    "parse_event",
    "validate_event",
]

# SQS's classic message size limit.
MAX_BODY_BYTES: Final = 256 * 1024
# A valid event nests 5 levels deep; 32 leaves room without risking recursion.
MAX_DEPTH: Final = 32
# Longer literals cannot be valid anywhere (attribute integers are <= 2**53) and
# Python's int() refuses more than 4300 digits with a ValueError.
MAX_INTEGER_LITERAL_LENGTH: Final = 40
MAX_REASON_LENGTH: Final = 500

_MODELS: Final[Mapping[str, type[UserCreated] | type[UserUpdated] | type[UserDeleted]]] = {
    EventType.CREATED.value: UserCreated,
    EventType.UPDATED.value: UserUpdated,
    EventType.DELETED.value: UserDeleted,
}
_TYPE_VALUES: Final = [t.value for t in EventType]
_EXPECTED_TYPES: Final = ", ".join(_TYPE_VALUES[:-1]) + " or " + _TYPE_VALUES[-1]
_SUPPORTED_VERSIONS: Final = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
_EVENT_ID_ADAPTER: Final = TypeAdapter[str](EventId)


class _Reject(Exception):
    """Internal: a body-level problem, carrying an already safe reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- messages ----------------------------------------------------------------

# Braces doubled: the messages below are str.format templates.
_NAME_PATTERN_LITERAL: Final = ATTRIBUTE_NAME_PATTERN.replace("{", "{{").replace("}", "}}")

# Error type -> message. Placeholders are filled from the error's ctx, and only
# with integers (our own limits): pydantic ctx values can be derived from input.
_MESSAGES: Final[Mapping[str, str]] = {
    # pydantic built-ins
    "missing": "field required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "none_required": "must be null",
    "string_too_short": "string too short (min {min_length})",
    "string_too_long": "string too long (max {max_length})",
    "too_short": "too few items (min {min_length})",
    "too_long": "too many items (max {max_length})",
    "recursion_loop": "recursive structure",
    # ours (events.models)
    "null_not_allowed": "must not be null (omit the field instead)",
    "invalid_unicode": "must not contain unpaired surrogates",
    "string_unicode": "must not contain unpaired surrogates",
    "control_characters": "must not contain control characters",
    "event_id_characters": "must contain only printable ASCII characters",
    "user_id_characters": "must contain only printable ASCII characters without spaces",
    "trace_id_characters": "must contain only letters, digits and . _ : / = -",
    "timestamp_type": "must be a string (RFC 3339 timestamp)",
    "timestamp_format": (
        "must be an RFC 3339 timestamp with an explicit offset, e.g. 2026-11-28T10:00:00Z"
    ),
    "timestamp_naive": "must have an explicit UTC offset",
    "unsupported_schema_version": (
        f"unsupported schema version (supported: {_SUPPORTED_VERSIONS})"
    ),
    "email": "not a valid email address",
    "phone_number": "must be an E.164 phone number (+ then 2 to 15 digits, no leading 0)",
    "birthdate": "must be a calendar date in YYYY-MM-DD form",
    "attribute_name": f"invalid attribute name (must match {_NAME_PATTERN_LITERAL})",
    "attribute_value_type": "must be a string, integer, number, boolean or list of strings",
    "attribute_integer_range": "integer out of range (max absolute value {max_value})",
    "attribute_number_finite": "must be a finite number",
    "attribute_list_item_type": "list items must be strings",
    "attribute_list_item_too_long": "list item too long (max {max_length})",
    "too_many_attributes": "too many attributes (max {max_attributes})",
    "attributes_too_large": "too large (max {max_bytes} bytes as compact JSON)",
    "deleted_data": "must be absent, null or an empty object",
    "sealed_base64": "must be standard base64 with padding",
    "enum": f"unknown event type (expected {_EXPECTED_TYPES})",
}
_SHORT_MESSAGES: Final[Mapping[str, str]] = {"string_too_short": "must not be empty"}
_PLAIN_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _message(error: ErrorDetails) -> str:
    error_type = error["type"]
    ctx = error.get("ctx") or {}
    numbers = {k: v for k, v in ctx.items() if type(v) is int}
    if error_type == "string_too_short" and numbers.get("min_length") == 1:
        return _SHORT_MESSAGES[error_type]
    template = _MESSAGES.get(error_type)
    if template is None:
        # error_type is a pydantic identifier such as "uuid_parsing": safe to show.
        return f"invalid value ({error_type})"
    try:
        return template.format_map(numbers)
    except (KeyError, IndexError, ValueError):
        return template.split(" (", 1)[0]


_NAME_LIKE = re.compile(ATTRIBUTE_NAME_PATTERN)
_NOT_SHOWN: Final = "<name not shown>"


def _quote(segment: str) -> str:
    """Render a user-controlled name, if it looks like a name.

    Reasons name the offending field, but a key is publisher-chosen text: one that could not be
    a field or attribute name (an email address, a phone number, words with spaces) may be the
    very personal value that was misplaced, so it is not repeated.
    """
    if not _NAME_LIKE.fullmatch(segment):
        return _NOT_SHOWN
    return json.dumps(segment, ensure_ascii=True)


def _format_loc(loc: Sequence[int | str]) -> str:
    path = ""
    for segment in loc:
        if isinstance(segment, int):
            path += f"[{segment}]"
        elif segment == "[key]":
            continue  # pydantic's marker for "the key itself"; the message says so
        elif _PLAIN_SEGMENT.fullmatch(segment):
            path += f".{segment}" if path else segment
        else:
            path += f"[{_quote(segment)}]"
    return path


def _join(parts: Sequence[str]) -> str:
    """Join with "; ", capped at MAX_REASON_LENGTH, saying how many were left out."""
    reason = ""
    for index, part in enumerate(parts):
        candidate = f"{reason}; {part}" if reason else part
        remaining = len(parts) - index - 1
        budget = MAX_REASON_LENGTH - (len(f"; and {remaining} more") if remaining else 0)
        if len(candidate) > budget:
            if not reason:
                return part[: MAX_REASON_LENGTH - 3] + "..."
            return f"{reason}; and {len(parts) - index} more"
        reason = candidate
    return reason


def format_errors(errors: ValidationError | Sequence[ErrorDetails]) -> str:
    """Safe reason for pydantic errors: "<path>: <message>" joined with "; ".

    Also for callers validating models directly (e.g. a merged Profile).
    """
    if isinstance(errors, ValidationError):
        errors = errors.errors(include_url=False, include_input=False)
    parts: list[str] = []
    for error in errors:
        path = _format_loc(error["loc"])
        part = f"{path}: {_message(error)}" if path else _message(error)
        if part not in parts:
            parts.append(part)
    return _join(parts)


# --- body level --------------------------------------------------------------

# A string token also runs to the end of an unterminated string: matching every
# quote to either its closing quote or the end keeps the scan linear.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def _check_depth(text: str) -> None:
    """Reject deep nesting before json.loads, whose C scanner recurses per level."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        char = match.group()[0]
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _Reject(f"body nested too deeply (max depth {MAX_DEPTH})")
        elif char in "]}":
            depth -= 1  # unbalanced input is left for json.loads to report


def _decode(body: str | bytes) -> str:
    if isinstance(body, bytes | bytearray | memoryview):
        if len(body) > MAX_BODY_BYTES:
            raise _Reject(f"body too large (max {MAX_BODY_BYTES} bytes)")
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise _Reject("body is not valid UTF-8") from None
    if isinstance(body, str):
        if len(body) > MAX_BODY_BYTES:  # cheap bound: a character is at least one byte
            raise _Reject(f"body too large (max {MAX_BODY_BYTES} bytes)")
        try:
            size = len(body.encode("utf-8"))
        except UnicodeEncodeError:
            raise _Reject("body is not valid Unicode (unpaired surrogate)") from None
        if size > MAX_BODY_BYTES:
            raise _Reject(f"body too large (max {MAX_BODY_BYTES} bytes)")
        return body
    raise _Reject("body must be str or bytes")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                # Last-wins (Python) vs first-wins (other parsers) makes duplicates ambiguous.
                raise _Reject(f"body has a duplicate key {_quote(key)} in an object")
            seen.add(key)
    return result


def _parse_constant(_literal: str) -> NoReturn:
    raise _Reject("body contains NaN or Infinity, which are not JSON")


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_INTEGER_LITERAL_LENGTH:
        raise _Reject(f"body contains an integer longer than {MAX_INTEGER_LITERAL_LENGTH} digits")
    return int(literal)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999 overflows to inf
        raise _Reject("body contains a number out of range")
    return value


# CPython's (constant) JSON syntax messages; anything else is reported generically.
_JSON_MESSAGES: Final[Mapping[str, str]] = {
    "Expecting value": "expecting a value",
    "Expecting property name enclosed in double quotes": "expecting a property name",
    "Expecting ':' delimiter": "expecting ':'",
    "Expecting ',' delimiter": "expecting ','",
    "Unterminated string starting at": "unterminated string",
    "Invalid control character at": "unescaped control character in a string",
    "Invalid \\escape": "invalid escape",
    "Invalid \\uXXXX escape": "invalid \\u escape",
    "Extra data": "extra data after the value",
    "Unexpected UTF-8 BOM (decode using utf-8-sig)": "byte order mark",
    "Illegal trailing comma before end of object": "trailing comma",
    "Illegal trailing comma before end of array": "trailing comma",
}


def _load_object(body: str | bytes) -> dict[str, Any]:
    reason: str | None = None
    value: Any = None
    try:
        text = _decode(body)
        _check_depth(text)
        value = json.loads(
            text,
            object_pairs_hook=_object_pairs,
            parse_constant=_parse_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except _Reject as exc:
        reason = exc.reason
    except json.JSONDecodeError as exc:
        what = _JSON_MESSAGES.get(exc.msg, "syntax error")
        reason = f"body is not valid JSON: {what} at line {exc.lineno}, column {exc.colno}"
    except RecursionError:  # not expected after _check_depth; kept as a guard
        reason = f"body nested too deeply (max depth {MAX_DEPTH})"
    if reason is not None:
        raise InvalidEvent(reason)
    if not isinstance(value, dict):
        raise InvalidEvent("body must be a JSON object")
    return value


# --- event level -------------------------------------------------------------


def _safe_event_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return _EVENT_ID_ADAPTER.validate_python(value)
    except ValidationError:
        return None


def validate_event(obj: Mapping[str, Any]) -> Event:
    """Validate an already decoded event object (what parse_event does after JSON)."""
    if not isinstance(obj, Mapping):
        raise InvalidEvent("event must be an object")
    event_id = _safe_event_id(obj.get("event_id"))
    event_type = obj.get("type")
    if "type" not in obj:
        raise InvalidEvent("type: field required", event_id=event_id)
    if not isinstance(event_type, str):
        raise InvalidEvent("type: must be a string", event_id=event_id)
    model = _MODELS.get(event_type)
    if model is None:
        raise InvalidEvent(
            f"type: unknown event type (expected {_EXPECTED_TYPES})", event_id=event_id
        )
    event_type = EventType(event_type).value  # a plain str, also for EventType members
    version = obj.get("schema_version")
    if type(version) is int and version not in SUPPORTED_SCHEMA_VERSIONS:
        # Alone: the other errors of a newer version's event would only be noise.
        raise InvalidEvent(
            f"schema_version: {_MESSAGES['unsupported_schema_version']}",
            event_id=event_id,
            event_type=event_type,
        )
    reason = ""
    try:
        return model.model_validate(obj if isinstance(obj, dict) else dict(obj))
    except ValidationError as exc:
        reason = format_errors(exc)
    raise InvalidEvent(reason, event_id=event_id, event_type=event_type)


def parse_event(body: str | bytes) -> Event:
    """Parse and validate one message body; raise InvalidEvent with a safe reason."""
    return validate_event(_load_object(body))
