"""The sweep's progress bar on a terminal: an estimated total, labelled so, that ends at 100%,
and log lines printed above the bar instead of through it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

# DynamoDB's ItemCount is refreshed about every six hours and counts every item: an estimate.
ESTIMATED = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/~{total_fmt} records "
    "(total estimated from the table's item count) [{elapsed}<{remaining}]"
)
EXACT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} records [{elapsed}]"
NOTHING = "{desc}: 100%, no records [{elapsed}]"  # a total of 0 would read 0%
UNKNOWN = "{desc}: {n_fmt} records [{elapsed}, {rate_fmt}]"


class SweepProgress:
    """`advance` as records are scanned; `finish` when the sweep visited everything."""

    def __init__(self, bar: tqdm[Any]) -> None:
        self._bar = bar

    @property
    def counted(self) -> tuple[int, int | None]:
        """Records visited so far, and the total the bar shows."""
        total = self._bar.total
        return int(self._bar.n), None if total is None else int(total)

    def advance(self, records: int) -> None:
        bar = self._bar
        if bar.total is not None and bar.n + records > bar.total:
            bar.total = bar.n + records  # the estimate was low: never past 100%
        bar.update(records)

    def finish(self) -> None:
        """The total is what was visited: the bar ends at 100%."""
        bar = self._bar
        bar.total = bar.n
        bar.bar_format = EXACT if bar.n else NOTHING
        bar.refresh()


class _AboveTheBar:
    """Stands in for stderr while the bar draws: whole lines go out through tqdm.write, which
    clears the bar, prints the line and draws the bar again below it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            tqdm.write(line, file=self._stream)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


@contextmanager
def sweep_progress(estimate: int | None, stream: TextIO | None = None) -> Iterator[SweepProgress]:
    """A bar on `stream` (stderr) if it is a terminal, nothing otherwise. While it is open,
    whatever is written to sys.stderr (the logs) goes above it."""
    stream = stream or sys.stderr
    bar_format = UNKNOWN if estimate is None else ESTIMATED
    with tqdm(
        total=estimate, desc="sweep", file=stream, disable=None, bar_format=bar_format
    ) as bar:
        if bar.disable:
            yield SweepProgress(bar)
            return
        saved = sys.stderr
        sys.stderr = _AboveTheBar(stream)
        try:
            yield SweepProgress(bar)
        finally:
            sys.stderr = saved
