"""Pydantic models of the user event contract (schema version 1).

Validators raise ``PydanticCustomError`` with error *types* of our own, which
``events.parse.format_errors`` maps to fixed messages without input values.
Beware that ``str(ValidationError)`` itself quotes the input: log
``format_errors(exc)`` instead.
"""

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import email_validator
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    Strict,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

__all__ = [
    "ATTRIBUTE_NAME_PATTERN",
    "EVENT_ADAPTER",
    "MAX_ADDRESS_FIELD_LENGTH",
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTES_JSON_BYTES",
    "MAX_ATTRIBUTE_INTEGER",
    "MAX_ATTRIBUTE_LIST_ITEMS",
    "MAX_ATTRIBUTE_LIST_ITEM_LENGTH",
    "MAX_ATTRIBUTE_NAME_LENGTH",
    "MAX_ATTRIBUTE_STRING_LENGTH",
    "MAX_EMAIL_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PATCH_ATTRIBUTES",
    "MAX_SEALED_LENGTH",
    "MAX_STREET_ADDRESS_LENGTH",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "Address",
    "AddressPatch",
    "AttributeValue",
    "Event",
    "EventType",
    "Profile",
    "ProfilePatch",
    "SealedEvent",
    "UserCreated",
    "UserDeleted",
    "UserUpdated",
    "attributes_json_size",
]

SCHEMA_VERSION: Final = 1
SUPPORTED_SCHEMA_VERSIONS: Final = frozenset({1})

MAX_ID_LENGTH: Final = 128
MAX_EMAIL_LENGTH: Final = 254
MAX_NAME_LENGTH: Final = 256
MAX_ADDRESS_FIELD_LENGTH: Final = 256
MAX_STREET_ADDRESS_LENGTH: Final = 1024

MAX_ATTRIBUTES: Final = 50
# A patch may remove every existing attribute and set as many new ones.
MAX_PATCH_ATTRIBUTES: Final = 2 * MAX_ATTRIBUTES
MAX_ATTRIBUTES_JSON_BYTES: Final = 16 * 1024
MAX_ATTRIBUTE_NAME_LENGTH: Final = 64
ATTRIBUTE_NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$"
MAX_ATTRIBUTE_STRING_LENGTH: Final = 1024
# JSON consumers (JavaScript) lose precision past 2**53.
MAX_ATTRIBUTE_INTEGER: Final = 2**53
MAX_ATTRIBUTE_LIST_ITEMS: Final = 50
MAX_ATTRIBUTE_LIST_ITEM_LENGTH: Final = 256


class EventType(StrEnum):
    CREATED = "user.created"
    UPDATED = "user.updated"
    DELETED = "user.deleted"


class _JsonSchemaExtra:
    """Annotated marker that adds keywords to a type's generated JSON Schema."""

    def __init__(self, **extra: Any) -> None:
        self.extra = extra

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(self.extra)
        return schema


def _fail(error_type: str, message: str, **ctx: int) -> PydanticCustomError:
    # ctx only ever holds our own numeric limits, never input.
    return PydanticCustomError(error_type, message, ctx or None)


# --- text ------------------------------------------------------------------

_SURROGATES = re.compile(r"[\ud800-\udfff]")
# C0 controls, DEL and C1 controls.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_EXCEPT_NEWLINES = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROLS_EXCEPT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# JSON Schema (ECMA-262) versions of the checks above.
_NO_CONTROLS_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_NO_CONTROLS_EXCEPT_NEWLINES_PATTERN = (
    "^[^\\u0000-\\u0009\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
)
_NO_CONTROLS_EXCEPT_WHITESPACE_PATTERN = (
    "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
)


def _check_text(value: str, controls: re.Pattern[str]) -> str:
    # Lone surrogates cannot be encoded as UTF-8 and would break storage later.
    if _SURROGATES.search(value):
        raise _fail("invalid_unicode", "must not contain unpaired surrogates")
    if controls.search(value):
        raise _fail("control_characters", "must not contain control characters")
    return value


def _single_line(value: str) -> str:
    return _check_text(value, _CONTROLS)


def _multi_line(value: str) -> str:
    return _check_text(value, _CONTROLS_EXCEPT_NEWLINES)


def _free_text(value: str) -> str:
    return _check_text(value, _CONTROLS_EXCEPT_WHITESPACE)


Name = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH),
    AfterValidator(_single_line),
    _JsonSchemaExtra(pattern=_NO_CONTROLS_PATTERN),
]
AddressField = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ADDRESS_FIELD_LENGTH),
    AfterValidator(_single_line),
    _JsonSchemaExtra(pattern=_NO_CONTROLS_PATTERN),
]
StreetAddress = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_STREET_ADDRESS_LENGTH),
    AfterValidator(_multi_line),
    _JsonSchemaExtra(pattern=_NO_CONTROLS_EXCEPT_NEWLINES_PATTERN),
]

# --- identifiers -----------------------------------------------------------

_EVENT_ID = re.compile(r"[\x20-\x7e]+")
_USER_ID = re.compile(r"[\x21-\x7e]+")


def _check_event_id(value: str) -> str:
    if not _EVENT_ID.fullmatch(value):
        raise _fail("event_id_characters", "must contain only printable ASCII characters")
    return value


def _check_user_id(value: str) -> str:
    if not _USER_ID.fullmatch(value):
        raise _fail("user_id_characters", "must be printable ASCII without spaces")
    return value


EventId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(_check_event_id),
    _JsonSchemaExtra(pattern="^[\\u0020-\\u007e]+$"),
]
UserId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(_check_user_id),
    _JsonSchemaExtra(pattern="^[\\u0021-\\u007e]+$"),
]

_TRACE_ID = re.compile(r"[A-Za-z0-9._:/=-]+")


def _check_trace_id(value: str) -> str:
    if not _TRACE_ID.fullmatch(value):
        raise _fail("trace_id_characters", "must contain only letters, digits and . _ : / = -")
    return value


def _trace_id_not_null(value: object) -> object:
    if value is None:
        raise _fail("null_not_allowed", "must not be null")
    return value


TraceId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(_check_trace_id),
    _JsonSchemaExtra(pattern="^[A-Za-z0-9._:/=-]+$"),
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
            raise _fail("timestamp_naive", "must have an explicit UTC offset")
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise _fail("timestamp_format", "out of range") from None
    if not isinstance(value, str):
        raise _fail("timestamp_type", "must be a string (RFC 3339 timestamp)")
    if len(value) > _MAX_TIMESTAMP_LENGTH or not _RFC3339.fullmatch(value):
        raise _fail("timestamp_format", "must be an RFC 3339 timestamp with an explicit offset")
    try:
        parsed = datetime.fromisoformat(value.upper())
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        # Out-of-range fields (month 13, offset +25:00) or a year that overflows in UTC.
        raise _fail(
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
    _JsonSchemaExtra(pattern=_RFC3339_PATTERN),
]

# --- schema version --------------------------------------------------------


def _check_schema_version(value: int) -> int:
    if value not in SUPPORTED_SCHEMA_VERSIONS:
        raise _fail("unsupported_schema_version", "unsupported schema_version")
    return value


SchemaVersion = Annotated[
    int,
    Strict(),
    AfterValidator(_check_schema_version),
    _JsonSchemaExtra(enum=sorted(SUPPORTED_SCHEMA_VERSIONS)),
]

# --- profile fields --------------------------------------------------------


def _check_email(value: str) -> str:
    _check_text(value, _CONTROLS)
    try:
        email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError:
        # The library's message may quote parts of the address: drop it.
        raise _fail("email", "not a valid email address") from None
    return value  # stored as given, not normalized


Email = Annotated[
    str,
    Strict(),
    StringConstraints(max_length=MAX_EMAIL_LENGTH),
    AfterValidator(_check_email),
    _JsonSchemaExtra(format="email"),
]

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def _check_phone_number(value: str) -> str:
    if not _E164.fullmatch(value):
        raise _fail("phone_number", "must be an E.164 phone number")
    return value


PhoneNumber = Annotated[
    str,
    Strict(),
    AfterValidator(_check_phone_number),
    _JsonSchemaExtra(pattern=r"^\+[1-9][0-9]{1,14}$"),
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
    raise _fail("birthdate", "must be a calendar date (YYYY-MM-DD)")


Birthdate = Annotated[
    str,
    Strict(),
    AfterValidator(_check_birthdate),
    _JsonSchemaExtra(format="date", pattern="^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
]

# --- custom attributes -----------------------------------------------------

_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN.removeprefix("^").removesuffix("$"))


def _check_attribute_name(value: str) -> str:
    if not _ATTRIBUTE_NAME.fullmatch(value):
        raise _fail("attribute_name", "invalid attribute name")
    return value


AttributeName = Annotated[str, Strict(), AfterValidator(_check_attribute_name)]

_ATTRIBUTE_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "maxLength": MAX_ATTRIBUTE_STRING_LENGTH,
            "pattern": _NO_CONTROLS_EXCEPT_WHITESPACE_PATTERN,
        },
        {
            "type": "integer",
            "minimum": -MAX_ATTRIBUTE_INTEGER,
            "maximum": MAX_ATTRIBUTE_INTEGER,
        },
        {"type": "number"},
        {"type": "boolean"},
        {
            "type": "array",
            "maxItems": MAX_ATTRIBUTE_LIST_ITEMS,
            "items": {
                "type": "string",
                "maxLength": MAX_ATTRIBUTE_LIST_ITEM_LENGTH,
                "pattern": _NO_CONTROLS_PATTERN,
            },
        },
    ]
}


def _validate_attribute_value(value: object) -> str | int | float | bool | list[str]:
    """Strict by hand: ``true`` is never an int and ``"1"`` never a number.

    One function instead of a pydantic union keeps error locations free of
    union member tags and yields a single error per bad value.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_ATTRIBUTE_INTEGER:
            raise _fail(
                "attribute_integer_range",
                "integer out of range",
                max_value=MAX_ATTRIBUTE_INTEGER,
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail("attribute_number_finite", "must be a finite number")
        return float(value)
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_STRING_LENGTH:
            raise _fail(
                "string_too_long", "string too long", max_length=MAX_ATTRIBUTE_STRING_LENGTH
            )
        return _free_text(value)
    if isinstance(value, list):
        if len(value) > MAX_ATTRIBUTE_LIST_ITEMS:
            raise _fail("too_long", "too many items", max_length=MAX_ATTRIBUTE_LIST_ITEMS)
        for item in value:
            if not isinstance(item, str):
                raise _fail("attribute_list_item_type", "list items must be strings")
            if len(item) > MAX_ATTRIBUTE_LIST_ITEM_LENGTH:
                raise _fail(
                    "attribute_list_item_too_long",
                    "list item too long",
                    max_length=MAX_ATTRIBUTE_LIST_ITEM_LENGTH,
                )
            _single_line(item)
        return [str(item) for item in value]
    raise _fail(
        "attribute_value_type", "must be a string, integer, number, boolean or list of strings"
    )


AttributeValue = Annotated[
    str | int | float | bool | list[str],
    PlainValidator(_validate_attribute_value),
    WithJsonSchema(_ATTRIBUTE_VALUE_SCHEMA),
]


def attributes_json_size(attributes: Mapping[str, object]) -> int:
    """Size in bytes of the compact UTF-8 JSON form of ``attributes`` (the 16 KiB bound)."""
    text = json.dumps(attributes, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(text.encode("utf-8", "surrogatepass"))


def _check_size(attributes: Mapping[str, object]) -> None:
    if attributes_json_size(attributes) > MAX_ATTRIBUTES_JSON_BYTES:
        raise _fail("attributes_too_large", "too large", max_bytes=MAX_ATTRIBUTES_JSON_BYTES)


def _check_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise _fail("too_many_attributes", "too many attributes", max_attributes=MAX_ATTRIBUTES)
    _check_size(attributes)
    return attributes


def _check_patch_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    if len(attributes) > MAX_PATCH_ATTRIBUTES:
        raise _fail(
            "too_many_attributes", "too many attributes", max_attributes=MAX_PATCH_ATTRIBUTES
        )
    values = {name: value for name, value in attributes.items() if value is not None}
    if len(values) > MAX_ATTRIBUTES:
        raise _fail("too_many_attributes", "too many attributes", max_attributes=MAX_ATTRIBUTES)
    _check_size(values)
    return attributes


_ATTRIBUTE_NAMES_SCHEMA = {
    "pattern": ATTRIBUTE_NAME_PATTERN,
    "maxLength": MAX_ATTRIBUTE_NAME_LENGTH,
}
_SIZE_NOTE = (
    f"The compact UTF-8 JSON form of the values is at most {MAX_ATTRIBUTES_JSON_BYTES} bytes."
)

Attributes = Annotated[
    dict[AttributeName, AttributeValue],
    AfterValidator(_check_attributes),
    WithJsonSchema(
        {
            "type": "object",
            "description": f"Custom attributes. {_SIZE_NOTE}",
            "maxProperties": MAX_ATTRIBUTES,
            "propertyNames": _ATTRIBUTE_NAMES_SCHEMA,
            "additionalProperties": _ATTRIBUTE_VALUE_SCHEMA,
        }
    ),
]
AttributesPatch = Annotated[
    dict[AttributeName, AttributeValue | None],
    AfterValidator(_check_patch_attributes),
    WithJsonSchema(
        {
            "type": "object",
            "description": (
                "Custom attributes to set, or to remove with null. At most "
                f"{MAX_ATTRIBUTES} non-null values. {_SIZE_NOTE}"
            ),
            "maxProperties": MAX_PATCH_ATTRIBUTES,
            "propertyNames": _ATTRIBUTE_NAMES_SCHEMA,
            "additionalProperties": {"anyOf": [_ATTRIBUTE_VALUE_SCHEMA, {"type": "null"}]},
        }
    ),
]

# --- models ----------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _drop_null_from_schema(schema: dict[str, Any]) -> None:
    """Describe optional-but-not-nullable fields without the ``null`` branch."""
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf")
        if branches is None or {"type": "null"} not in branches:
            continue
        rest = [branch for branch in branches if branch != {"type": "null"}]
        del prop["anyOf"]
        if len(rest) == 1:
            prop.update(rest[0])
        else:
            prop["anyOf"] = rest
        if prop.get("default", ...) is None:
            del prop["default"]


class _OptionalModel(_Model):
    # Fields may be absent but not null: null would be ambiguous in a full profile.
    model_config = ConfigDict(json_schema_extra=lambda schema, _cls: _drop_null_from_schema(schema))

    @field_validator("*", mode="before")
    @classmethod
    def _reject_null(cls, value: object) -> object:
        if value is None:
            raise _fail("null_not_allowed", "must not be null")
        return value


class _PatchModel(_Model):
    # JSON Merge Patch (RFC 7396): absent means keep, null means remove.
    def __eq__(self, other: object) -> bool:
        # Pydantic ignores which fields were set; for a patch that *is* the meaning.
        if not isinstance(other, _PatchModel):
            return NotImplemented
        return super().__eq__(other) and self.model_fields_set == other.model_fields_set

    __hash__ = _Model.__hash__


class Address(_OptionalModel):
    """Postal address, as in the OpenID Connect address claim."""

    street_address: StreetAddress | None = None
    locality: AddressField | None = None
    region: AddressField | None = None
    postal_code: AddressField | None = None
    country: AddressField | None = None


class AddressPatch(_PatchModel):
    """Changes to the address: null removes a field."""

    street_address: StreetAddress | None = None
    locality: AddressField | None = None
    region: AddressField | None = None
    postal_code: AddressField | None = None
    country: AddressField | None = None


class Profile(_OptionalModel):
    """The full profile of a user.created event: every field may be absent, none may be null."""

    email: Email | None = None
    email_verified: Annotated[bool, Strict()] | None = None
    phone_number: PhoneNumber | None = None
    phone_number_verified: Annotated[bool, Strict()] | None = None
    given_name: Name | None = None
    family_name: Name | None = None
    birthdate: Birthdate | None = None
    address: Address | None = None
    attributes: Attributes | None = None


class ProfilePatch(_PatchModel):
    """Changes of a user.updated event, a JSON Merge Patch (RFC 7396): null removes a field."""

    # Callers dump with exclude_unset=True: "absent" (keep) and null (remove) differ.
    email: Email | None = None
    email_verified: Annotated[bool, Strict()] | None = None
    phone_number: PhoneNumber | None = None
    phone_number_verified: Annotated[bool, Strict()] | None = None
    given_name: Name | None = None
    family_name: Name | None = None
    birthdate: Birthdate | None = None
    address: AddressPatch | None = None
    attributes: AttributesPatch | None = None


def _require_type(schema: dict[str, Any]) -> None:
    # ``type`` has a default for Python callers, but every message must carry it.
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")
    # trace_id may be absent but not null.
    trace = schema.get("properties", {}).get("trace_id")
    if trace is not None:
        _drop_null_from_schema({"properties": {"trace_id": trace}})


class _Envelope(_Model):
    model_config = ConfigDict(json_schema_extra=lambda schema, _cls: _require_type(schema))

    event_id: Annotated[
        EventId, Field(description="Unique id of the event; the deduplication key.")
    ]
    user_id: Annotated[UserId, Field(description="Id of the user, e.g. an OIDC subject.")]
    occurred_at: Annotated[
        Timestamp,
        Field(description="When it happened: RFC 3339 with an explicit offset (Z or +hh:mm)."),
    ]
    schema_version: SchemaVersion = SCHEMA_VERSION
    trace_id: Annotated[
        TraceId | None,
        BeforeValidator(_trace_id_not_null),
        Field(
            description="Optional trace id from the publisher (say an X-Ray or W3C trace id); "
            "the worker logs it with every line about this event."
        ),
    ] = None


class UserCreated(_Envelope):
    """A user was created; data holds the full profile."""

    type: Literal[EventType.CREATED] = EventType.CREATED
    data: Profile


class UserUpdated(_Envelope):
    """A user's profile changed; data is a JSON Merge Patch against the stored profile."""

    type: Literal[EventType.UPDATED] = EventType.UPDATED
    data: ProfilePatch


def _deleted_data(value: object) -> None:
    empty = value is None or (isinstance(value, Mapping) and len(value) == 0)
    if not empty:
        raise _fail("deleted_data", "must be absent, null or an empty object")


DeletedData = Annotated[
    None,
    BeforeValidator(_deleted_data),
    WithJsonSchema({"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]}),
]


class UserDeleted(_Envelope):
    """A user was deleted; data is absent, null or an empty object."""

    type: Literal[EventType.DELETED] = EventType.DELETED
    data: DeletedData = None


Event = Annotated[UserCreated | UserUpdated | UserDeleted, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[UserCreated | UserUpdated | UserDeleted] = TypeAdapter(Event)


# base64 of an aws-encryption-sdk message; it must fit an SQS body with the envelope around it.
MAX_SEALED_LENGTH: Final = 200 * 1024
_BASE64_PATTERN: Final = "^[A-Za-z0-9+/]+={0,2}$"


def _check_base64(value: str) -> str:
    if len(value) % 4 or not re.fullmatch(_BASE64_PATTERN, value):
        raise _fail("sealed_base64", "must be standard base64 with padding")
    return value


SealedData = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=4, max_length=MAX_SEALED_LENGTH),
    AfterValidator(_check_base64),
    _JsonSchemaExtra(pattern=_BASE64_PATTERN, contentEncoding="base64"),
]


class SealedEvent(_Envelope):
    """Any event whose data is sealed for the worker (see events.sealing).

    ``sealed`` replaces ``data``: an aws-encryption-sdk message (base64) holding the compact JSON
    of ``data``, with ``event_id``, ``user_id``, ``type`` and ``occurred_at`` (UTC, microseconds,
    e.g. ``2026-11-28T10:00:00.000000Z``) in its encryption context. Once unsealed, the event is
    validated exactly as if ``data`` had been sent in the clear.
    """

    type: EventType
    sealed: Annotated[
        SealedData,
        Field(description="aws-encryption-sdk message (base64) holding the JSON of data."),
    ]
