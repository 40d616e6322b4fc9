"""The DynamoDB Streams consumer, shared among worker replicas through a lease table.

    lineage.py   pure: which shards may be read (parents before children)
    balance.py   pure: fair share of leases among replicas, hand-off requests
    leases.py    the lease table: conditional takes, renewals, checkpoints, releases (protocol
                 described there); `read_progress` for operators
    records.py   the stream's vocabulary: StreamRecord, ShardIterator, Page, Unreadable
    config.py    StreamConfig: intervals and limits, and the backoff they give
    held.py      HeldLease: one lease this replica holds, its writes under one lock
    reader.py    ShardReader: iterator -> records -> handler -> checkpoint, for one shard
    consumer.py  StreamConsumer, the coordinator: shards and leases -> one reader per shard
    metrics.py   the consumer's metrics

The stream itself is read through the `StreamShards` port (`userstore.worker.ports`), which
`userstore.worker.adapters.streams.DynamoStreams` implements over `dynamodbstreams`.

Delivery is at least once, in order within a shard, parents before children; a record is never
handed to two replicas that both hold a valid lease.
"""

from .balance import Lease
from .config import StreamConfig
from .consumer import StreamConsumer, StreamNotFound
from .leases import LEASE_TABLE_SPEC, LeaseLost, LeaseStore, ShardProgress
from .lineage import SHARD_END, Shard, readable
from .records import EventName, Page, RecordHandler, ShardIterator, StreamRecord, Unreadable

__all__ = [
    "LEASE_TABLE_SPEC",
    "SHARD_END",
    "EventName",
    "Lease",
    "LeaseLost",
    "LeaseStore",
    "Page",
    "RecordHandler",
    "Shard",
    "ShardIterator",
    "ShardProgress",
    "StreamConfig",
    "StreamConsumer",
    "StreamNotFound",
    "StreamRecord",
    "Unreadable",
    "readable",
]
