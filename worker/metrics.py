"""Prometheus metrics. Labels hold event types, outcomes and error classes: never personal data."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "userstore_events",
            "Events handled, by event type and outcome.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "userstore_dead_letters",
            "Messages sent to the dead-letter queue, by error class.",
            ["error"],
            registry=self.registry,
        )
        self.retries = Counter(
            "userstore_message_retries",
            "Messages left on the queue for a later attempt, by error class.",
            ["error"],
            registry=self.registry,
        )
        self.verification_failures = Counter(
            "userstore_verification_failures",
            "Stored records that failed signature verification or decryption.",
            registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "userstore_handling_seconds",
            "Time from parse to outcome for one message.",
            ["type"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "userstore_in_flight", "Messages received and not yet settled.", registry=self.registry
        )

    def count(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a counter (for reports and tests)."""
        value = self.registry.get_sample_value(f"{name}_total", labels or {})
        return value or 0.0
