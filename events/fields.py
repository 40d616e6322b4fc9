"""The field types of the user event contract: each an ``Annotated`` type that carries its
validator (raising ``fail`` errors, see ``events.checks``) and its JSON Schema keywords.

Custom attributes have their own module, ``events.attributes``.
"""

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Final

import email_validator
from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    Strict,
    StringConstraints,
    WithJsonSchema,
)

from .checks import (
    NO_CONTROLS_EXCEPT_NEWLINES_PATTERN,
    NO_CONTROLS_PATTERN,
    JsonSchemaExtra,
    fail,
    multi_line,
    single_line,
)
from .limits import (
    MAX_ADDRESS_FIELD_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SEALED_LENGTH,
    MAX_STREET_ADDRESS_LENGTH,
    SUPPORTED_SCHEMA_VERSIONS,
)

__all__ = [
    "AddressField",
    "Birthdate",
    "DeletedData",
    "Email",
    "EventId",
    "Name",
    "PhoneNumber",
    "SchemaVersion",
    "SealedData",
    "StreetAddress",
    "Timestamp",
    "TraceId",
    "UserId",
    "trace_id_not_null",
]

# --- text ------------------------------------------------------------------

Name = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH),
    AfterValidator(single_line),
    JsonSchemaExtra(pattern=NO_CONTROLS_PATTERN),
]
AddressField = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ADDRESS_FIELD_LENGTH),
    AfterValidator(single_line),
    JsonSchemaExtra(pattern=NO_CONTROLS_PATTERN),
]
StreetAddress = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_STREET_ADDRESS_LENGTH),
    AfterValidator(multi_line),
    JsonSchemaExtra(pattern=NO_CONTROLS_EXCEPT_NEWLINES_PATTERN),
]

# --- identifiers -----------------------------------------------------------

_EVENT_ID = re.compile(r"[\x20-\x7e]+")
_USER_ID = re.compile(r"[\x21-\x7e]+")


def _check_event_id(value: str) -> str:
    if not _EVENT_ID.fullmatch(value):
        raise fail("event_id_characters", "must contain only printable ASCII characters")
    return value


def _check_user_id(value: str) -> str:
    if not _USER_ID.fullmatch(value):
        raise fail("user_id_characters", "must be printable ASCII without spaces")
    return value


EventId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(_check_event_id),
    JsonSchemaExtra(pattern="^[\\u0020-\\u007e]+$"),
]
UserId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(_check_user_id),
    JsonSchemaExtra(pattern="^[\\u0021-\\u007e]+$"),
]

_TRACE_ID = re.compile(r"[A-Za-z0-9._:/=-]+")


def _check_trace_id(value: str) -> str:
    if not _TRACE_ID.fullmatch(value):
        raise fail("trace_id_characters", "must contain only letters, digits and . _ : / = -")
    return value


def trace_id_not_null(value: object) -> object:
    if value is None:
        raise fail("null_not_allowed", "must not be null")
    return value


TraceId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(_check_trace_id),
    JsonSchemaExtra(pattern="^[A-Za-z0-9._:/=-]+$"),
]

# --- timestamps ------------------------------------------------------------

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_RFC3339_PATTERN = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}"
    "(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_MAX_TIMESTAMP_LENGTH = 64


def _parse_timestamp(value: object) -> datetime:
    """Accept RFC 3339 strings with an explicit offset (and aware datetimes from Python).

    Runs *before* pydantic's own datetime parsing, which would also accept unix
    numbers and naive timestamps.
    """
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise fail("timestamp_naive", "must have an explicit UTC offset")
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise fail("timestamp_format", "out of range") from None
    if not isinstance(value, str):
        raise fail("timestamp_type", "must be a string (RFC 3339 timestamp)")
    if len(value) > _MAX_TIMESTAMP_LENGTH or not _RFC3339.fullmatch(value):
        raise fail("timestamp_format", "must be an RFC 3339 timestamp with an explicit offset")
    try:
        parsed = datetime.fromisoformat(value.upper())
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        # Out-of-range fields (month 13, offset +25:00) or a year that overflows in UTC.
        raise fail(
            "timestamp_format", "must be an RFC 3339 timestamp with an explicit offset"
        ) from None


def _format_timestamp(value: datetime) -> str:
    value = value.astimezone(UTC)
    if value.microsecond == 0:
        timespec = "seconds"
    elif value.microsecond % 1000 == 0:
        timespec = "milliseconds"
    else:
        timespec = "microseconds"
    return value.isoformat(timespec=timespec).replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_timestamp),
    PlainSerializer(_format_timestamp, return_type=str, when_used="json"),
    JsonSchemaExtra(pattern=_RFC3339_PATTERN),
]

# --- schema version --------------------------------------------------------


def _check_schema_version(value: int) -> int:
    if value not in SUPPORTED_SCHEMA_VERSIONS:
        raise fail("unsupported_schema_version", "unsupported schema_version")
    return value


SchemaVersion = Annotated[
    int,
    Strict(),
    AfterValidator(_check_schema_version),
    JsonSchemaExtra(enum=sorted(SUPPORTED_SCHEMA_VERSIONS)),
]

# --- profile fields --------------------------------------------------------


def _check_email(value: str) -> str:
    single_line(value)
    try:
        email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError:
        # The library's message may quote parts of the address: drop it.
        raise fail("email", "not a valid email address") from None
    return value  # stored as given, not normalized


Email = Annotated[
    str,
    Strict(),
    StringConstraints(max_length=MAX_EMAIL_LENGTH),
    AfterValidator(_check_email),
    JsonSchemaExtra(format="email"),
]

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def _check_phone_number(value: str) -> str:
    if not _E164.fullmatch(value):
        raise fail("phone_number", "must be an E.164 phone number")
    return value


PhoneNumber = Annotated[
    str,
    Strict(),
    AfterValidator(_check_phone_number),
    JsonSchemaExtra(pattern=r"^\+[1-9][0-9]{1,14}$"),
]

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _check_birthdate(value: str) -> str:
    if _DATE.fullmatch(value):
        try:
            date.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value  # kept as str so dumps stay JSON-native
    raise fail("birthdate", "must be a calendar date (YYYY-MM-DD)")


Birthdate = Annotated[
    str,
    Strict(),
    AfterValidator(_check_birthdate),
    JsonSchemaExtra(format="date", pattern="^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
]


# --- the data of a user.deleted event ---------------------------------------


def _deleted_data(value: object) -> None:
    empty = value is None or (isinstance(value, Mapping) and len(value) == 0)
    if not empty:
        raise fail("deleted_data", "must be absent, null or an empty object")


DeletedData = Annotated[
    None,
    BeforeValidator(_deleted_data),
    WithJsonSchema({"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]}),
]


# --- sealed data -----------------------------------------------------------

_BASE64_PATTERN: Final = "^[A-Za-z0-9+/]+={0,2}$"


def _check_base64(value: str) -> str:
    if len(value) % 4 or not re.fullmatch(_BASE64_PATTERN, value):
        raise fail("sealed_base64", "must be standard base64 with padding")
    return value


SealedData = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=4, max_length=MAX_SEALED_LENGTH),
    AfterValidator(_check_base64),
    JsonSchemaExtra(pattern=_BASE64_PATTERN, contentEncoding="base64"),
]
