"""Every metric is emitted with exactly the label names docs/operations.md gives it, and every
label value the worker can emit for an enumerated label is one the doc lists.

tests/unit/test_metrics_documented.py checks names; on a fresh registry a labelled metric has no
sample, so its labels were never compared. Here each metric is given a sample through the
documented label names (prometheus_client refuses any other set), and the samples collected
must carry exactly those names.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from userstore.events import parse_event
from userstore.worker import errors, handling
from userstore.worker.handlers import Outcome
from userstore.worker.metrics import SDK_CALLER, WORKER_CALLER, Metrics
from userstore.worker.streams.metrics import StreamMetrics
from userstore.worker.sweep import SweepCounts

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| `(userstore_\w+)` \| (\w+) \|\s*([^|]*?)\s*\|\s*(.*?)\s*\|$", re.M)
NOT_LABELS = ("le", "quantile")  # histogram / summary sample labels, not the metric's


def documented() -> dict[str, tuple[str, set[str], set[str]]]:
    """metric -> (type, label names, every `word` quoted in its meaning column)."""
    return {
        m.group(1): (
            m.group(2),
            set(re.findall(r"`(\w+)`", m.group(3))),
            set(re.findall(r"`(\w+)`", m.group(4))),
        )
        for m in ROW.finditer(DOC.read_text())
    }


def registered() -> tuple[Metrics, dict[str, MetricWrapperBase]]:
    metrics = Metrics()
    stream = StreamMetrics.of(metrics)
    found: dict[str, MetricWrapperBase] = {}
    for holder in (metrics, stream):
        for value in vars(holder).values():
            if isinstance(value, MetricWrapperBase):
                family = value.describe()[0]
                suffix = "_total" if family.type == "counter" else ""
                found[family.name + suffix] = value
    return metrics, found


def sample(metric: MetricWrapperBase, labels: set[str]) -> None:
    """One sample through exactly `labels`: ValueError if the metric has other label names."""
    target = metric.labels(**{name: "x" for name in sorted(labels)}) if labels else metric
    kind = metric.describe()[0].type
    if kind == "counter":
        target.inc()  # type: ignore[attr-defined]
    elif kind == "gauge":
        target.set(1)  # type: ignore[attr-defined]
    else:
        target.observe(1)  # type: ignore[attr-defined]


def test_every_metric_has_exactly_its_documented_label_names() -> None:
    docs = documented()
    metrics, found = registered()
    assert set(found) == set(docs)
    for name, metric in found.items():
        kind, labels, _ = docs[name]
        assert metric.describe()[0].type == kind, name
        try:
            sample(metric, labels)
        except ValueError as exc:
            pytest.fail(
                f"{name}: labels documented as {sorted(labels)}, registered otherwise ({exc})"
            )
    seen = {}
    for family in metrics.registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        for s in family.samples:
            seen.setdefault(family.name + suffix, set()).update(
                k for k in s.labels if k not in NOT_LABELS
            )
    for name, (_, labels, _) in docs.items():
        assert seen.get(name, set()) == labels, name


def values_documented(metric: str) -> set[str]:
    return documented()[metric][2]


class Scripted:
    """A handler that answers each event with the outcome or error it is given."""

    def __init__(self, answer: Outcome | Exception) -> None:
        self.answer = answer

    async def handle_burst(self, events: Any, hints: Any = None) -> list[Outcome | Exception]:
        if isinstance(self.answer, RuntimeError):
            raise self.answer  # a bug in the handler itself
        return [self.answer for _ in events]


async def test_every_event_outcome_the_handling_step_emits_is_documented() -> None:
    """Drive the step both loops share (worker.handling) through every outcome and every kind
    of failure, and read the outcome labels it emitted."""
    metrics = Metrics()
    event = parse_event(
        json.dumps(
            {
                "event_id": "e1",
                "type": "user.updated",
                "user_id": "urn:fdc:gov.uk:2022:metrics-labels",
                "occurred_at": "2026-01-01T00:00:00+00:00",
                "data": {"given_name": "A"},
            }
        )
    )
    answers: list[Outcome | Exception] = [
        *Outcome,
        errors.InvalidResult("refused for good"),
        errors.AwsUnavailable("transient"),
        RuntimeError("a bug"),
    ]
    for answer in answers:
        await handling.handle_burst(
            Scripted(answer), [handling.Delivery("m1", "t1", event)], None, metrics
        )
    emitted = {
        sample.labels["outcome"]
        for family in metrics.registry.collect()
        if family.name == "userstore_events"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert len(emitted) == len(Outcome) + 2  # each outcome, dead-lettered, failed
    assert emitted <= values_documented("userstore_events_total")


def test_every_sweep_outcome_is_documented() -> None:
    emitted = {f.name for f in fields(SweepCounts)} - {"scanned"}  # the outcome is the field
    assert emitted <= values_documented("userstore_sweep_records_total")


def test_every_kms_caller_is_documented() -> None:
    assert {WORKER_CALLER, SDK_CALLER} <= values_documented("userstore_kms_requests_total")


def test_every_stream_event_name_is_documented() -> None:
    # DynamoDB Streams' eventName values: the label is the record's own eventName.
    assert {"INSERT", "MODIFY", "REMOVE"} <= values_documented("userstore_stream_records_total")


def _subclasses(root: type) -> set[type]:
    found = set()
    for cls in root.__subclasses__():
        found |= {cls} | _subclasses(cls)
    return found


def test_every_dead_letter_error_class_is_documented() -> None:
    """The `error` label is the class name of the error that dead-lettered the message."""
    listed = values_documented("userstore_dead_letters_total")
    direct = {c.__name__ for c in errors.DeadLetter.__subclasses__()}
    retry_later = {c.__name__ for c in errors.RetryLater.__subclasses__()}
    assert direct | retry_later <= listed
    # Subclasses of a listed class (ControlRolledBack is a RecordTampered) are reported under
    # their own name: they must be listed too, or be absent from the worker's queue path.
    undocumented = {c.__name__ for c in _subclasses(errors.DeadLetter)} - listed
    assert undocumented <= {"ControlRolledBack"}, undocumented
