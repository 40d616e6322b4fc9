"""The user event contract shared by userstore and the services that publish to it."""

from .envelopes import Incoming, Wrapper, read_message
from .errors import EventError, InvalidEvent
from .limits import SCHEMA_VERSION, SUPPORTED_SCHEMA_VERSIONS
from .models import (
    EVENT_ADAPTER,
    Address,
    AddressPatch,
    Event,
    EventType,
    Profile,
    ProfilePatch,
    SealedEvent,
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
    "Incoming",
    "InvalidEvent",
    "Profile",
    "ProfilePatch",
    "PublishError",
    "PublishResult",
    "Publisher",
    "SealedEvent",
    "UserCreated",
    "UserDeleted",
    "UserUpdated",
    "Wrapper",
    "format_errors",
    "parse_event",
    "read_message",
    "serialize",
    "validate_event",
]
