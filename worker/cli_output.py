"""What the `userstore` commands print: reports and listings as lines of text (pure).

No personal data: user ids only where the operator asked for them (failed records, matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

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


def dead_letter_line(d: ListedDeadLetter) -> str:
    receives = d.receive_count if d.receive_count is not None else "-"
    return (
        f"{d.event_id or '-'}  {d.event_type or '-'}  {d.error or '-'}  age {age(d.age_s)}  "
        f"receives {receives}  {d.reason}"
    )
