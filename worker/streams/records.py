"""The stream's vocabulary: records, a page of them, and why a position can't be read.

The streams port (`userstore.worker.ports.StreamShards`) speaks in these; only the adapter knows
the botocore shapes and codes behind them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventName(StrEnum):
    INSERT = "INSERT"
    MODIFY = "MODIFY"
    REMOVE = "REMOVE"


@dataclass(frozen=True)
class StreamRecord:
    """One stream record. Images are DynamoDB JSON; repr leaves out keys and images (personal)."""

    event_name: EventName
    keys: Mapping[str, Any] = field(repr=False)
    new_image: Mapping[str, Any] | None = field(repr=False)
    old_image: Mapping[str, Any] | None = field(repr=False)
    sequence_number: str
    approximate_created_at: datetime
    shard_id: str

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], shard_id: str) -> StreamRecord:
        body = raw["dynamodb"]
        created = body["ApproximateCreationDateTime"]
        if isinstance(created, int | float):
            created = datetime.fromtimestamp(created, UTC)
        elif created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return cls(
            event_name=EventName(raw["eventName"]),
            keys=body["Keys"],
            new_image=body.get("NewImage"),
            old_image=body.get("OldImage"),
            sequence_number=str(body["SequenceNumber"]),
            approximate_created_at=created,
            shard_id=shard_id,
        )


RecordHandler = Callable[[Sequence[StreamRecord]], Awaitable[None]]


@dataclass(frozen=True)
class ShardIterator:
    """A position in one shard, good for one read; it expires after about 15 minutes."""

    shard_id: str
    token: str = field(repr=False)  # long and opaque: left out of logs


@dataclass(frozen=True)
class Page:
    """What one read of a shard returned, in stream order."""

    records: tuple[StreamRecord, ...]
    next_iterator: ShardIterator | None
    """Where to read next; None: the shard is closed and these were its last records."""


class Unreadable(StrEnum):
    """Why a shard can't be read from a position; each has its own remedy in the reader."""

    EXPIRED = "expired"
    """The iterator is too old (15 minutes): ask for a new one at the same position."""
    TRIMMED = "trimmed"
    """The position is older than the 24-hour retention: start again at the trim horizon."""
    GONE = "gone"
    """The shard is no longer in the stream: nothing is left to read there."""
