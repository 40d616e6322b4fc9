"""The re-encryption sweep: find every record not sealed under the active key, re-encrypt it.

Records are found from signed-only bookkeeping (`key_ref`, `email_idx`) without decrypting. The
table is scanned in parallel segments; after each page a segment's position and counts are
checkpointed in the state table, so a sweep that is killed resumes where it stopped and its
report counts every record once. One sweep per target runs at a time (a lease in the state
table). Re-encryption itself is worker.reseal.Resealer: conditioned on the record's revision,
content unchanged, verification failures reported and never "repaired".
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Protocol

from aiolimiter import AsyncLimiter

from .authority import AuthorityContext, current_target
from .control import is_control
from .errors import RecordTampered, UserstoreError
from .errors import SweepBusy as SweepBusy
from .logs import get_logger
from .metrics import Metrics
from .ports import Checkpoint, StoredRecord, SweepCounts, SweepState, UsersTable
from .record import read_head
from .reseal import Resealed, Resealer, Target

log = get_logger("userstore.sweep")

_PAGE_SIZE = 200
_PARALLEL_PER_SEGMENT = 8


class SweepContext(AuthorityContext, Protocol):
    """What a sweep needs: the authority (for its target), the users table, its state."""

    @property
    def store(self) -> UsersTable: ...

    @property
    def state_table(self) -> SweepState: ...


@dataclass
class SweepReport:
    target: Target
    counts: SweepCounts
    failed_user_ids: list[str] = field(default_factory=list)
    resumed: bool = False
    # False when it stopped (its time budget, or `stop`) with segments left: run it again.
    done: bool = False
    # What this run did; `counts` also holds what earlier runs of the same job checkpointed.
    this_run: SweepCounts = field(default_factory=SweepCounts)

    @property
    def ok(self) -> bool:
        return self.counts.failed == 0


def page_limit(remaining_s: float | None, rate_per_s: float, segments: int) -> int:
    """Records to ask for in a segment's next scan page.

    A full page without a time budget; with one, no more than this segment's share of the rate
    can re-encrypt in the time left, so the last page started ends near the deadline (a page is
    never cut short: its records are checkpointed together).
    """
    if remaining_s is None:
        return _PAGE_SIZE
    return max(1, min(_PAGE_SIZE, int(remaining_s * rate_per_s / segments)))


def job_id(target: Target, segments: int) -> str:
    text = f"{target.key_ref}|{target.index_version}|{segments}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Lease:
    """This run's hold on the job's lease."""

    def __init__(self, state: SweepState, job: str, lease_s: float) -> None:
        self._state = state
        self.job = job
        self.lease_s = lease_s
        self.owner = uuid.uuid4().hex

    async def take(self) -> None:
        if not await self._state.take_lease(
            self.job, self.owner, now_s=time.time(), lease_s=self.lease_s
        ):
            raise SweepBusy("another sweep for this target is running")

    async def release(self) -> None:
        await self._state.release_lease(self.job)


async def run_sweep(
    ctx: SweepContext,
    *,
    segments: int = 4,
    rate_per_s: float = 100.0,
    on_scanned: Callable[[int], object] | None = None,
    stop: asyncio.Event | None = None,
    wait_for_lease_s: float = 0.0,
    verify: bool = False,
    metrics: Metrics | None = None,
    max_duration_s: float | None = None,
) -> SweepReport:
    """Re-encrypt every stale record. Resumes an interrupted sweep for the same target.

    If another sweep holds the lease, wait up to `wait_for_lease_s` for it (a sweep that was
    killed holds it until it expires), then raise SweepBusy. With `verify`, records already
    under the active key are opened too, so that every tampered record is reported (one KMS
    Decrypt per record in `kms` mode). With `max_duration_s`, no page is started after that
    long (pages are sized to end near it): the report is then not `done`, and the next run
    resumes from the checkpoints.
    """
    stop_at = None if max_duration_s is None else time.monotonic() + max_duration_s
    target = await current_target(ctx)
    await ctx.cipher.activate(target.key_ref)
    job = job_id(target, segments) + ("-verify" if verify else "")
    state = ctx.state_table
    lease = _Lease(state, job, ctx.settings.sweep_lease_s)
    deadline = time.monotonic() + wait_for_lease_s
    while True:
        try:
            await lease.take()
            break
        except SweepBusy:
            if time.monotonic() >= deadline:
                raise
            log.info("sweep.waiting_for_lease")
            await asyncio.sleep(1.0)
    try:
        saved = [await state.load(job, s) for s in range(segments)]
        if all(cp.done for cp in saved):
            await state.forget(job, segments)  # the last sweep finished: this is a new one
            saved = [Checkpoint() for _ in range(segments)]
        report = SweepReport(
            target, SweepCounts(), resumed=any(cp.last_key or cp.done for cp in saved)
        )
        sweep = _Sweep(
            ctx, job, target, report, rate_per_s, on_scanned, stop, verify, metrics, stop_at
        )
        renewer = asyncio.create_task(_renew(lease))
        if metrics is not None:
            metrics.sweeps_running.inc()
        try:
            await asyncio.gather(*(sweep.segment(n, segments, saved[n]) for n in range(segments)))
        finally:
            renewer.cancel()
            # Settled here: a Lambda container's loop must not carry it into the next invocation.
            await asyncio.gather(renewer, return_exceptions=True)
            if metrics is not None:
                metrics.sweeps_running.dec()
        report.done = all(cp.done for cp in saved)
        log.info(
            "sweep.done" if report.done else "sweep.unfinished",
            **{f.name: getattr(report.counts, f.name) for f in fields(SweepCounts)},
        )
        return report
    finally:
        await lease.release()


async def _renew(lease: _Lease) -> None:
    while True:
        await asyncio.sleep(lease.lease_s / 3)
        await lease.take()


class _Sweep:
    def __init__(
        self,
        ctx: SweepContext,
        job: str,
        target: Target,
        report: SweepReport,
        rate_per_s: float,
        on_scanned: Callable[[int], object] | None,
        stop: asyncio.Event | None,
        verify: bool,
        metrics: Metrics | None,
        stop_at: float | None = None,
    ) -> None:
        self._ctx = ctx
        self._job = job
        self._stop_at = stop_at
        self._rate_per_s = rate_per_s
        self._metrics = metrics
        self._verify = verify
        self._target = target
        self._report = report
        self._limiter = AsyncLimiter(rate_per_s, 1)
        self._resealer = Resealer(
            ctx.store, ctx.cipher, ctx.index, max_conflicts=ctx.settings.max_conflict_retries
        )
        self._on_scanned = on_scanned
        self._stop = stop or asyncio.Event()

    async def segment(self, segment: int, segments: int, checkpoint: Checkpoint) -> None:
        self._report.counts.add(checkpoint.counts)
        self._report.failed_user_ids += checkpoint.failed_ids
        if checkpoint.done:
            return
        gate = asyncio.Semaphore(_PARALLEL_PER_SEGMENT)
        while not self._stop.is_set():
            remaining_s = None if self._stop_at is None else self._stop_at - time.monotonic()
            if remaining_s is not None and remaining_s <= 0:
                return  # out of time: the checkpoint saved after the last page is where to resume
            page = await self._ctx.store.scan_page(
                segment,
                segments,
                limit=page_limit(remaining_s, self._rate_per_s, segments),
                start=checkpoint.last_key,
            )
            items = [i for i in page.items if not is_control(i["user_id"]["S"])]
            results = await asyncio.gather(
                *(self._one(StoredRecord(i, read_head(i)), gate) for i in items)
            )
            page_counts = SweepCounts(scanned=len(items))
            for outcome, failed_id in results:
                setattr(page_counts, outcome, getattr(page_counts, outcome) + 1)
                if self._metrics is not None:
                    self._metrics.sweep_records.labels(outcome).inc()
                if failed_id is not None:
                    checkpoint.failed_ids.append(failed_id)
                    self._report.failed_user_ids.append(failed_id)
            checkpoint.counts.add(page_counts)
            self._report.counts.add(page_counts)
            self._report.this_run.add(page_counts)
            checkpoint.last_key = page.last_key
            checkpoint.done = checkpoint.last_key is None
            # Position and counts are saved together, after the page: a kill redoes at most one
            # page, whose records re-encrypted before the kill then count as current. So every
            # record is counted once.
            await self._ctx.state_table.save(self._job, segment, checkpoint)
            if self._on_scanned is not None:
                self._on_scanned(len(items))
            if checkpoint.done:
                return

    async def _one(self, record: StoredRecord, gate: asyncio.Semaphore) -> tuple[str, str | None]:
        head = record.head
        if not self._target.is_stale(head) and not self._verify:
            return "current", None
        async with gate:
            await self._limiter.acquire()
            try:
                if not self._target.is_stale(head):
                    await self._ctx.cipher.open(record.item)  # verification only
                    return "current", None
                outcome = await self._resealer.reseal(head.user_id, self._target, record)
            except RecordTampered:
                log.error("security.record_verification_failed", source="sweep")
                return "failed", head.user_id
            except UserstoreError as exc:
                log.warning("sweep.record_failed", error=type(exc).__name__)
                return "failed", head.user_id
        if outcome is Resealed.RESEALED:
            return "resealed", None
        if outcome is Resealed.CURRENT:
            return "current", None
        return "skipped", None
