"""The DynamoDB Streams consumer, shared among worker replicas through a lease table.

    lineage.py   pure: which shards may be read (parents before children)
    balance.py   pure: fair share of leases among replicas, hand-off requests
    leases.py    the lease table: conditional takes, renewals, checkpoints, releases (protocol
                 described there); `read_progress` for operators
    consumer.py  StreamConsumer: leases -> one reader per shard -> handler -> checkpoint

Delivery is at least once, in order within a shard, parents before children; a record is never
handed to two replicas that both hold a valid lease.
"""

from .balance import Lease
from .consumer import (
    EventName,
    RecordHandler,
    StreamConfig,
    StreamConsumer,
    StreamNotFound,
    StreamRecord,
)
from .leases import (
    LEASE_TABLE_SPEC,
    LeaseLost,
    LeaseStore,
    LeaseTable,
    ShardProgress,
    read_progress,
)
from .lineage import SHARD_END, Shard, readable

__all__ = [
    "LEASE_TABLE_SPEC",
    "SHARD_END",
    "EventName",
    "Lease",
    "LeaseLost",
    "LeaseStore",
    "LeaseTable",
    "RecordHandler",
    "Shard",
    "ShardProgress",
    "StreamConfig",
    "StreamConsumer",
    "StreamNotFound",
    "StreamRecord",
    "read_progress",
    "readable",
]
