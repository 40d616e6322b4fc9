"""A re-encryption sweep run by a scheduler, in time-boxed slices.

EventBridge Scheduler (through ``userstore.worker.lambdas.sweep_handler``), cron or a
Kubernetes CronJob (``userstore sweep --max-duration``) start one run per tick. A run first
follows the control records and the authority, as a replica does (a warm Lambda container keeps
its keys), then:

- does nothing when the active-key control record asks for no re-encryption job (a sweep
  finished since the last rotation): one read, no scan. ``force`` or ``verify`` scan anyway;
- otherwise sweeps until its time budget is spent, stopping between pages; checkpoints hold
  where each segment stands, so the next run resumes (status ``unfinished``);
- returns at once with status ``busy`` when another sweep for the same target holds the lease
  (an overlapping tick, a replica running the job): nothing is touched;
- when every segment is done and no record failed, marks the job done in the control record,
  as a replica's re-encryption job does, so later ticks are cheap again. With failures the job
  stays pending: the next tick sweeps the table again (and reports them again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from .authority import current_target
from .control import ACTIVE_KEY, ControlRecords
from .errors import UserstoreError
from .follow import FollowContext, follow_authority
from .keyref import KeyRef
from .logs import get_logger
from .metrics import Metrics
from .ports import SweepCounts
from .rotation import job_done, move_controls
from .sweep import SweepBusy, SweepContext, run_sweep

log = get_logger("userstore.sweep")


class ScheduledContext(FollowContext, SweepContext, Protocol):
    """A scheduled slice follows the control records, sweeps, and moves the control records."""


class SweepStatus(StrEnum):
    DONE = "done"  # every record is under the active key (or no job was pending)
    UNFINISHED = "unfinished"  # stopped at the time budget: run again to resume
    BUSY = "busy"  # another sweep for this target holds the lease: nothing done


@dataclass
class ScheduledReport:
    status: SweepStatus
    key_ref: str
    index_version: int
    # False: the control record asked for no job and nothing was scanned.
    pending: bool
    duration_s: float
    # This run's work, and the job's so far (earlier runs' checkpoints included).
    run: SweepCounts = field(default_factory=SweepCounts)
    job: SweepCounts = field(default_factory=SweepCounts)
    failed_user_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, without user ids (the Lambda's answer and log line)."""
        return {
            "status": str(self.status),
            "key_ref": self.key_ref,
            "index_version": self.index_version,
            "pending": self.pending,
            "duration_s": round(self.duration_s, 3),
            "run": asdict(self.run),
            "job": asdict(self.job),
        }

    def log_fields(self) -> dict[str, Any]:
        """Flat fields, for CloudWatch metric filters (`$.run_resealed`, `$.status`, ...)."""
        flat = {k: v for k, v in self.as_dict().items() if k not in ("run", "job")}
        flat |= {f"run_{k}": v for k, v in asdict(self.run).items()}
        flat |= {f"job_{k}": v for k, v in asdict(self.job).items()}
        return flat


async def job_pending(controls: ControlRecords, key_ref: KeyRef) -> bool:
    """Whether the active-key control record asks for a re-encryption job towards `key_ref`.

    No control record, or one naming another key (a rotation under way), counts as pending:
    only a record that confirms the key and says the job is done lets a run skip the scan.
    """
    control = await controls.read(ACTIVE_KEY)
    if control is None or control.body.get("active_key_ref") != str(key_ref):
        return True
    return bool(control.body.get("reencrypt_pending"))


async def run_scheduled_sweep(
    ctx: ScheduledContext,
    *,
    max_duration_s: float | None,
    segments: int = 4,
    rate_per_s: float = 100.0,
    verify: bool = False,
    force: bool = False,
    metrics: Metrics | None = None,
    on_scanned: Callable[[int], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ScheduledReport:
    """One scheduled slice of the re-encryption job; see the module docstring."""
    started = clock()
    # Fresh keys first: a warm Lambda container may hold an index key version since replaced.
    target = await follow_authority(ctx)
    report = ScheduledReport(
        SweepStatus.DONE, str(target.key_ref), target.index_version, pending=True, duration_s=0.0
    )
    if not (force or verify) and not await job_pending(ctx.controls, target.key_ref):
        report.pending = False
        report.duration_s = clock() - started
        return _logged(report)
    remaining = None if max_duration_s is None else max(0.0, max_duration_s - (clock() - started))
    try:
        swept = await run_sweep(
            ctx,
            segments=segments,
            rate_per_s=rate_per_s,
            on_scanned=on_scanned,
            verify=verify,
            metrics=metrics,
            max_duration_s=remaining,
        )
    except SweepBusy:
        report.status = SweepStatus.BUSY
        report.duration_s = clock() - started
        return _logged(report)
    report.status = SweepStatus.DONE if swept.done else SweepStatus.UNFINISHED
    report.key_ref, report.index_version = str(swept.target.key_ref), swept.target.index_version
    report.run, report.job = swept.this_run, swept.counts
    report.failed_user_ids = swept.failed_user_ids
    if swept.done and swept.ok:
        await finish_job(ctx, swept.target.key_ref, swept.target.index_version)
    report.duration_s = clock() - started
    return _logged(report)


async def finish_job(ctx: ScheduledContext, key_ref: KeyRef, index_version: int) -> None:
    """After a complete sweep with no failures: move the control records and index keys to the
    active key and mark the re-encryption job done (unless another rotation came meanwhile)."""
    try:
        # An index-key rotation during the sweep keeps the key: don't clear its job.
        now = await current_target(ctx)
        if (now.key_ref, now.index_version) == (key_ref, index_version):
            # The control records and index keys move too, or the old key could not retire.
            await move_controls(ctx)
            await job_done(ctx, key_ref)
    except UserstoreError as exc:
        # The sweep itself is done; the next run finds the job pending and sweeps again.
        log.warning("sweep.mark_done_failed", error=type(exc).__name__, reason=exc.reason)


def _logged(report: ScheduledReport) -> ScheduledReport:
    log.info("sweep.report", **report.log_fields())
    return report
