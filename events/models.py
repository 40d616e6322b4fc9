"""Pydantic models of the user event contract (schema version 1).

The field types and their validators are in ``events.fields`` and ``events.attributes``, the
bounds in ``events.limits``. Validators raise ``PydanticCustomError`` with error *types* of our
own, which ``events.parse.format_errors`` maps to fixed messages without input values. Beware
that ``str(ValidationError)`` itself quotes the input: log ``format_errors(exc)`` instead.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    field_validator,
)

from .attributes import Attributes, AttributesPatch, AttributeValue, attributes_json_size
from .checks import fail
from .fields import (
    AddressField,
    Birthdate,
    DeletedData,
    Email,
    EventId,
    Name,
    PhoneNumber,
    SchemaVersion,
    SealedData,
    StreetAddress,
    Timestamp,
    TraceId,
    UserId,
    trace_id_not_null,
)
from .limits import SCHEMA_VERSION

__all__ = [
    "EVENT_ADAPTER",
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


class EventType(StrEnum):
    CREATED = "user.created"
    UPDATED = "user.updated"
    DELETED = "user.deleted"


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
            raise fail("null_not_allowed", "must not be null")
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
        BeforeValidator(trace_id_not_null),
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


class UserDeleted(_Envelope):
    """A user was deleted; data is absent, null or an empty object."""

    type: Literal[EventType.DELETED] = EventType.DELETED
    data: DeletedData = None


Event = Annotated[UserCreated | UserUpdated | UserDeleted, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[UserCreated | UserUpdated | UserDeleted] = TypeAdapter(Event)


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
