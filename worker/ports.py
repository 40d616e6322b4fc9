"""The ports: what the domain needs of each AWS service, as small Protocols.

The adapters in `userstore.worker.adapters` implement them over AWS; `tests/fakes` implements
them in memory, so the handler, the settlement policy and the sweep are unit-tested with no
emulator. A port speaks the domain's language (records, messages, leases), never botocore's.
"""

from __future__ import annotations

# --- streams ---
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the streams package imports this module for its annotations only
    from .streams.lineage import Shard
    from .streams.records import Page, ShardIterator, Unreadable


class StreamShards(Protocol):
    """One DynamoDB stream, read shard by shard (adapters.streams.DynamoStreams; a fake in
    tests). AwsUnavailable when the service keeps failing; no other failure escapes."""

    async def shards(self) -> list[Shard]:
        """Every shard the stream lists now, parents named; StreamNotFound if there is none."""
        ...

    async def iterator(self, shard_id: str, after: str | None) -> ShardIterator | Unreadable:
        """An iterator just past sequence number `after`, or at the trim horizon for None."""
        ...

    async def read(self, iterator: ShardIterator, limit: int) -> Page | Unreadable:
        """Up to `limit` records from `iterator`, and where to go on."""
        ...
