"""Prometheus metrics. Every metric is listed in docs/operations.md.

Labels hold event types, outcomes, AWS service and operation names and error classes or codes:
never personal data, never ids (user, event or message), never anything taken from a payload.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# No `<name>_created` series: one timestamp per counter and histogram child, doubling /metrics for
# what the process start time already says. Process-wide, as prometheus_client's switch is.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client

# The worker's metrics, for code with no handle on them (worker.aws.call counts its retries).
# Set by the runner; tasks it starts inherit it.
current: ContextVar[Metrics | None] = ContextVar("userstore_metrics", default=None)

# AWS error codes are identifiers; anything else (an emulator's HTML page) is not a label value.
_LABEL_SAFE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

SDK_CALLER = "encryption_sdk"
WORKER_CALLER = "worker"


def _safe(value: str) -> str:
    return value if _LABEL_SAFE.fullmatch(value) else "other"


def package_version() -> str:
    try:
        return version("userstore")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree not installed
        return "unknown"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "userstore_events",
            "Handling attempts of parsed events, by event type and outcome (applied, duplicate, "
            "stale, unchanged, dead_lettered, failed).",
            ["type", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "userstore_dead_letters",
            "Messages sent to the dead-letter queue, by error class.",
            ["error"],
            registry=r,
        )
        self.retries = Counter(
            "userstore_message_retries",
            "Messages left on the queue for a later attempt, by error class.",
            ["error"],
            registry=r,
        )
        self.verification_failures = Counter(
            "userstore_verification_failures",
            "Stored records that failed signature verification or decryption.",
            registry=r,
        )
        self.handling_seconds = Histogram(
            "userstore_handling_seconds",
            "Time from parse to outcome for one message.",
            ["type"],
            registry=r,
        )
        self.in_flight = Gauge(
            "userstore_in_flight", "Messages received and not yet settled.", registry=r
        )
        self.aws_requests = Counter(
            "userstore_aws_requests",
            "AWS requests sent (every attempt), by service and operation.",
            ["service", "operation"],
            registry=r,
        )
        self.aws_errors = Counter(
            "userstore_aws_errors",
            "AWS requests that failed, by service, operation and error code or exception class.",
            ["service", "operation", "error"],
            registry=r,
        )
        self.aws_retries = Counter(
            "userstore_aws_retries",
            "AWS calls attempted again after a transient failure, by operation.",
            ["operation"],
            registry=r,
        )
        self.kms_requests = Counter(
            "userstore_kms_requests",
            "KMS requests, by operation and caller (worker, or the encryption SDK's own client).",
            ["operation", "caller"],
            registry=r,
        )
        self.sweep_records = Counter(
            "userstore_sweep_records",
            "Records a re-encryption sweep has scanned, by outcome "
            "(resealed, current, skipped, failed).",
            ["outcome"],
            registry=r,
        )
        self.sweeps_running = Gauge(
            "userstore_sweeps_running", "Re-encryption sweeps running in this process.", registry=r
        )
        self.reencryption_pending = Gauge(
            "userstore_reencryption_pending",
            "1 while the active-key control record asks for a re-encryption job (a rotation is "
            "not finished), else 0; as last read by this replica.",
            registry=r,
        )
        self.stream_records_set_aside = Counter(
            "userstore_stream_records_set_aside",
            "Stream records given up on after USERSTORE_STREAM_MAX_RECORD_TRIES failed tries "
            "(left for `userstore sweep --verify`).",
            registry=r,
        )
        self.control_follow_failures = Counter(
            "userstore_control_follow_failures",
            "Polls of the control records (active key, index keys) that failed, by error class.",
            ["error"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "userstore_event_loop_lag_seconds",
            "How late the event loop last woke a 1-second timer (a blocked loop shows here).",
            registry=r,
        )
        self.ready = Gauge("userstore_ready", "1 when /readyz answers ready, else 0.", registry=r)
        self.build = Gauge(
            "userstore_build_info", "Always 1; the version is a label.", ["version"], registry=r
        )
        self.build.labels(package_version()).set(1)

    def count(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of a counter (for reports and tests)."""
        value = self.registry.get_sample_value(f"{name}_total", labels or {})
        return value or 0.0

    def instrument(self, client: Any, caller: str = WORKER_CALLER) -> None:
        """Count every request a botocore or aiobotocore client sends, and its failures.

        botocore emits `after-call` once per HTTP attempt that got an answer and
        `after-call-error` for one that did not (connection dropped, timeout).
        """

        def answered(event_name: str, http_response: Any, parsed: Any, **_: Any) -> None:
            service, operation = _names(event_name)
            self._count(service, operation, caller)
            if getattr(http_response, "status_code", 200) >= 300:
                code = str((parsed or {}).get("Error", {}).get("Code") or "")
                code = code or f"HTTP{getattr(http_response, 'status_code', 0)}"
                self.aws_errors.labels(service, operation, _safe(code)).inc()

        def failed(event_name: str, exception: BaseException, **_: Any) -> None:
            service, operation = _names(event_name)
            self._count(service, operation, caller)
            self.aws_errors.labels(service, operation, _safe(type(exception).__name__)).inc()

        client.meta.events.register("after-call", answered)
        client.meta.events.register("after-call-error", failed)

    def _count(self, service: str, operation: str, caller: str) -> None:
        self.aws_requests.labels(service, operation).inc()
        if service == "kms":
            self.kms_requests.labels(operation, caller).inc()


def _names(event_name: str) -> tuple[str, str]:
    """`after-call.dynamodb-streams.GetRecords` -> (dynamodb-streams, GetRecords)."""
    parts = event_name.split(".")
    if len(parts) < 3:
        return "unknown", "unknown"
    return _safe(parts[1]), _safe(parts[2])
