"""The ports: what the domain needs of each AWS service, as small Protocols.

The adapters in `userstore.worker.adapters` implement them over AWS; `tests/fakes` implements
them in memory, so the handler, the settlement policy and the sweep are unit-tested with no
emulator. A port speaks the domain's language (records, messages, leases), never botocore's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .profile import Event
from .tracing import trace_id

# --- streams ---

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


# --- queue ---------------------------------------------------------------------------------

MAX_BATCH = 10  # SQS's limit on the entries of one batch call


@dataclass(frozen=True)
class QueueMessage:
    """One received message, in the worker's terms (SQS's shape is read once, in the adapter).

    `attributes` are the message attributes as SQS carries them ({"DataType", "StringValue" or
    "BinaryValue"}): the trace id and the dead-letter annotation travel in them.
    """

    id: str
    body: str
    receipt: str = ""  # empty in a Lambda batch: the event source mapping deletes
    receive_count: int = 1
    group: str | None = None
    attributes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    trace_header: str | None = None  # X-Ray's AWSTraceHeader system attribute
    sent_at_ms: int | None = None

    def text(self, name: str) -> str | None:
        value = self.attributes.get(name, {}).get("StringValue")
        return None if value is None else str(value)

    def trace_id(self, event: Event | None) -> str:
        sources = {
            "MessageId": self.id,
            "Attributes": {"AWSTraceHeader": self.trace_header},
            "MessageAttributes": self.attributes,
        }
        return trace_id(sources, event)


@dataclass(frozen=True)
class OutgoingMessage:
    body: str
    attributes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    group: str | None = None  # FIFO queues only
    deduplication_id: str | None = None  # FIFO queues only


@dataclass(frozen=True)
class EntryFailed:
    """One entry of a batch call that SQS refused (the others went through)."""

    index: int
    code: str


class Queue(Protocol):
    """One SQS queue: the worker's only way to it (adapters.queue.SqsQueue; a fake in tests).

    Batch calls take at most MAX_BATCH entries and answer the entries refused; a call that fails
    as a whole raises an error of the tree (AwsUnavailable), never botocore's.
    """

    @property
    def fifo(self) -> bool: ...

    async def receive(
        self, max_messages: int, *, wait_s: int, visibility_timeout_s: int
    ) -> list[QueueMessage]: ...

    async def delete(self, receipts: Sequence[str]) -> list[EntryFailed]: ...

    async def change_visibility(
        self, receipts: Sequence[str], timeout_s: int
    ) -> list[EntryFailed]: ...

    async def send(self, message: OutgoingMessage) -> None: ...

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailed]: ...

    async def depth(self) -> int:
        """Messages in the queue, visible or in flight (approximate)."""
        ...
