"""Reading the worker's JSON log lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def log_records(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines written so far (a half-written last line is skipped)."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def count_logged(path: Path, event: str) -> int:
    return sum(1 for r in log_records(path) if r.get("event") == event)
