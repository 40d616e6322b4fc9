"""The stream consumer's metrics (documented in docs/operations.md)."""

from __future__ import annotations

import weakref
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..metrics import Metrics


class StreamMetrics:
    """Registered once per registry (replicas in a test share one)."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, StreamMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "userstore_stream_lag_seconds",
            "How far behind the stream the consumer is (oldest unhandled record's age).",
            registry=registry,
        )
        self.records = Counter(
            "userstore_stream_records",
            "Stream records handled and checkpointed, by event name.",
            ["event"],
            registry=registry,
        )
        self.failures = Counter(
            "userstore_stream_batch_failures",
            "Batches the handler failed on (retried from the checkpoint), by error class.",
            ["error"],
            registry=registry,
        )
        self.shards = Gauge(
            "userstore_stream_shards_owned", "Shard leases this replica holds.", registry=registry
        )

    @classmethod
    def of(cls, metrics: Metrics) -> StreamMetrics:
        found = cls._by_registry.get(metrics.registry)
        if found is None:
            found = cls._by_registry[metrics.registry] = cls(metrics.registry)
        return found
