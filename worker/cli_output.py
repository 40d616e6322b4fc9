"""What the `userstore` commands print: reports and listings as lines of text (pure).

No personal data: user ids only where the operator asked for them (failed records, matches).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from .errors import UserstoreError

if TYPE_CHECKING:  # the reports' own modules pull in the AWS stack; printing needs none of it
    from .dlq import ListedDeadLetter
    from .scheduled import ScheduledReport
    from .streams import ShardProgress
    from .sweep import SweepReport


def sweep_lines(report: SweepReport) -> list[str]:
    c = report.counts
    lines = [
        f"{'resumed sweep' if report.resumed else 'sweep'} to {report.target.key_ref} "
        f"(index key v{report.target.index_version}): scanned {c.scanned}, "
        f"re-encrypted {c.resealed}, already current {c.current}, "
        f"skipped (changed meanwhile) {c.skipped}, failed {c.failed}"
    ]
    return lines + _failed(report.failed_user_ids)


def scheduled_sweep_lines(report: ScheduledReport) -> list[str]:
    r, j = report.run, report.job
    lines = [
        f"sweep {report.status} to {report.key_ref} (index key v{report.index_version}) in "
        f"{report.duration_s:.1f} s: this run scanned {r.scanned}, re-encrypted {r.resealed}; "
        f"job so far scanned {j.scanned}, re-encrypted {j.resealed}, already current "
        f"{j.current}, skipped (changed meanwhile) {j.skipped}, failed {j.failed}"
    ]
    return lines + _failed(report.failed_user_ids)


def _failed(user_ids: Sequence[str]) -> list[str]:
    return [f"failed verification or re-encryption: {user_id}" for user_id in user_ids]


def shard_lines(shards: Sequence[ShardProgress], now: datetime) -> list[str]:
    """The stream part of `rotation status`."""
    lines = ["stream shards:" if shards else "stream: no replica has read it yet"]
    for shard in shards:
        age = (
            "no record yet"
            if shard.last_record_at is None
            else f"last record handled {(now - shard.last_record_at).total_seconds():.0f} s ago"
        )
        owner = shard.owner or "(no owner)"
        state = "lease expired" if shard.expired else "leased"
        lines.append(f"  {shard.shard_id}: {owner}, {state}, {age}")
    return lines


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


DEAD_LETTER_COLUMNS = ("EVENT ID", "TYPE", "ERROR", "AGE", "RECEIVES", "REASON")


def dead_letter_table(dead_letters: Sequence[ListedDeadLetter]) -> list[str]:
    """`dlq list`: a header and one row per dead letter, columns aligned (the reason last, as
    long as it is)."""
    rows = [
        [
            d.event_id or "-",
            d.event_type or "-",
            d.error or "-",
            age(d.age_s),
            "-" if d.receive_count is None else str(d.receive_count),
            d.reason,
        ]
        for d in dead_letters
    ]
    if not rows:
        return []
    table = [list(DEAD_LETTER_COLUMNS), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(DEAD_LETTER_COLUMNS) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in table
    ]


def unknown_error_classes(
    asked: Collection[str], known: Collection[str], moved: Collection[str | None]
) -> list[str]:
    """`dlq redrive --error`: the classes asked for that userstore never dead-letters with and
    that no dead letter moved had (a bug's class, named in `dlq list`, is accepted)."""
    return [name for name in asked if name not in known and name not in moved]


def error_classes(*roots: type[UserstoreError]) -> list[str]:
    """The names of every class below `roots` (which are never raised themselves), sorted."""

    def below(cls: type[UserstoreError]) -> set[str]:
        return set().union(*({sub.__name__} | below(sub) for sub in cls.__subclasses__()))

    return sorted(set().union(*(below(root) for root in roots)))
