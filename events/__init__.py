"""The user event contract shared by userstore and the services that publish to it."""

from .errors import EventError, InvalidEvent
from .models import (
    EVENT_ADAPTER,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    Address,
    AddressPatch,
    Event,
    EventType,
    Profile,
    ProfilePatch,
    UserCreated,
    UserDeleted,
    UserUpdated,
)
from .parse import format_errors, parse_event, validate_event
from .publisher import Publisher, PublishError, PublishResult, serialize

__all__ = [
    "EVENT_ADAPTER",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "Address",
    "AddressPatch",
    "Event",
    "EventError",
    "EventType",
    "InvalidEvent",
    "Profile",
    "ProfilePatch",
    "PublishError",
    "PublishResult",
    "Publisher",
    "UserCreated",
    "UserDeleted",
    "UserUpdated",
    "format_errors",
    "parse_event",
    "serialize",
    "validate_event",
]
