"""The ports: what the domain needs of each AWS service, as small Protocols.

The adapters in `userstore.worker.adapters` implement them over AWS; `tests/fakes` implements
them in memory, so the handler, the settlement policy and the sweep are unit-tested with no
emulator. A port speaks the domain's language (records, messages, leases), never botocore's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .profile import Event
from .tracing import trace_id

# Annotations only: the streams package and the key service import this module.
if TYPE_CHECKING:
    from .index_keys import WrappedKey
    from .keyref import KeyRef
    from .record import Item, RecordHead
    from .streams.leases import ShardProgress
    from .streams.lineage import Shard
    from .streams.records import Page, ShardIterator, Unreadable

# --- streams ---


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


# --- tables and keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRecord:
    """A sealed item as read from the users table, with its bookkeeping (not yet verified)."""

    item: Item
    head: RecordHead


@dataclass(frozen=True)
class PutResult:
    """`written`, or lost the race: then `current` is what the winner left (None: no item)."""

    written: bool
    current: StoredRecord | None = None


@dataclass(frozen=True)
class ScanPage:
    """One page of a segment of a table scan; `last_key` None: the segment is done."""

    items: list[Item]
    last_key: dict[str, Any] | None


class UsersTable(Protocol):
    """The users table: sealed records (and the control records) by user id."""

    @property
    def table(self) -> str: ...

    async def get(self, user_id: str) -> StoredRecord | None: ...

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, StoredRecord | None]: ...

    async def put(self, item: Item, *, expected_rev: int | None) -> PutResult:
        """Write `item` if the stored revision is still `expected_rev` (None: no item yet)."""
        ...

    async def scan_page(
        self, segment: int, segments: int, *, limit: int, start: dict[str, Any] | None
    ) -> ScanPage:
        """Whole items, consistently read (what the sweep re-encrypts)."""
        ...

    def scan_bookkeeping(self, segment: int, segments: int) -> AsyncIterator[list[Item]]:
        """Every item of a segment, page by page, with only its signed bookkeeping."""
        ...

    async def users_with_email_token(self, token: str) -> set[str]:
        """User ids the blind index lists under `token` (eventually consistent)."""
        ...

    async def approximate_count(self) -> int | None: ...

    async def stream_arn(self) -> str | None: ...


@dataclass
class SweepCounts:
    scanned: int = 0
    resealed: int = 0
    current: int = 0
    skipped: int = 0
    failed: int = 0

    def add(self, other: SweepCounts) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Checkpoint:
    """Where one segment of a sweep stands: saved after each page, with the page's counts."""

    last_key: dict[str, Any] | None = None
    done: bool = False
    counts: SweepCounts = field(default_factory=SweepCounts)
    failed_ids: list[str] = field(default_factory=list)


class SweepState(Protocol):
    """The sweep's bookkeeping in the state table: a lease per job, a checkpoint per segment."""

    async def take_lease(self, job: str, owner: str, *, now_s: float, lease_s: float) -> bool:
        """True if `owner` holds the job's lease until `now_s + lease_s` (taken or renewed)."""
        ...

    async def release_lease(self, job: str) -> None: ...

    async def load(self, job: str, segment: int) -> Checkpoint: ...

    async def save(self, job: str, segment: int, checkpoint: Checkpoint) -> None: ...

    async def forget(self, job: str, segments: int) -> None: ...


class ShardProgressReader(Protocol):
    """Per shard of a stream: who reads it and how far (the stream leases, for reports)."""

    async def shard_progress(self, stream_arn: str) -> list[ShardProgress]: ...


class KeyService(Protocol):
    """The key service (KMS) as the domain uses it: the authority, aliases, the index keys."""

    async def resolve(self, key_id: str) -> KeyRef: ...

    async def active_kms_key(self) -> KeyRef: ...

    async def payload_key(self) -> KeyRef: ...

    async def point_alias(self, alias: str, to: KeyRef) -> None: ...

    async def new_index_key(self, under: KeyRef, version: int) -> WrappedKey: ...

    async def unwrap_index_key(self, wrapped: WrappedKey, version: int) -> tuple[bytes, KeyRef]: ...

    async def rewrap_index_key(
        self, wrapped: WrappedKey, version: int, to: KeyRef
    ) -> WrappedKey: ...


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
        """Messages in the queue, visible, in flight or delayed (approximate)."""
        ...
