"""Every metric the worker registers is documented in docs/operations.md, with its labels."""

from __future__ import annotations

import re
from pathlib import Path

from userstore.worker.metrics import Metrics
from userstore.worker.streams.metrics import StreamMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| `(userstore_\w+)` \| \w+ \|\s*([^|]*?)\s*\|", re.M)


def test_every_metric_is_in_the_operations_table() -> None:
    metrics = Metrics()
    StreamMetrics.of(metrics)
    rows = {m.group(1): m.group(2) for m in ROW.finditer(DOC.read_text())}
    registered = set()
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        registered.add(name)
        assert name in rows, f"{name} is not documented in docs/operations.md"
        labels = {
            label
            for sample in family.samples
            for label in sample.labels
            if label not in ("le", "quantile")
        }
        assert labels <= set(re.findall(r"`(\w+)`", rows[name])), name
    assert set(rows) == registered  # and nothing documented that does not exist
