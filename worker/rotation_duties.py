"""A replica's duties beside the SQS loop: keep up with key rotation.

- Follow the control records (poll every `control_poll_s`, and at once when the stream shows a
  change): switch new writes to the active key once the authority confirms it.
- Read the table's stream (leases shared with the other replicas): a changed record still
  sealed under a retired key (written by a replica that had not switched yet) is re-encrypted.
- Run the pending re-encryption job: after a rotation, one replica (the one holding the sweep
  lease) sweeps the records still under older keys; if it dies, another resumes from the sweep's
  checkpoints once the lease expires.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from .adapters.state_table import LeaseTable
from .adapters.streams import DynamoStreams
from .control import ACTIVE_KEY, is_control
from .errors import RecordTampered, RetryLater, UserstoreError
from .follow import FollowContext, follow_authority
from .logs import frames, get_logger
from .metrics import Metrics
from .record import read_head
from .reseal import Resealed, Resealer, Target
from .rotation import job_done, move_controls
from .streams import StreamConfig, StreamConsumer, StreamRecord
from .sweep import SweepBusy, SweepContext, run_sweep

log = get_logger("userstore.background")  # the name logs and dashboards know


class DutiesContext(FollowContext, SweepContext, Protocol):
    """What the duties need: following and sweeping, and the clients the stream reader reads
    with (until the stream reader takes ports of its own)."""

    @property
    def streams_client(self) -> Any: ...

    @property
    def dynamodb_client(self) -> Any: ...


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RotationDuties:
    def __init__(self, ctx: DutiesContext, metrics: Metrics, stream_arn: str | None) -> None:
        self._ctx = ctx
        self._metrics = metrics
        self._stream_arn = stream_arn
        self._wake = asyncio.Event()
        self._target: Target | None = None
        self._resealer = Resealer(
            ctx.store, ctx.cipher, ctx.index, max_conflicts=ctx.settings.max_conflict_retries
        )
        self.stream: StreamConsumer | None = None
        self._set_aside = SetAside(ctx.settings.stream_max_record_tries, metrics)
        self._lag_logged_at = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        # Until the first poll succeeds (say KMS is down), _target stays None and the stream
        # handler leaves records alone; the follower keeps trying.
        await self._follow_guarded()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(stop, tg), name="control-follower")
            if self._stream_arn and self._ctx.streams_client is not None:
                settings = self._ctx.settings
                self.stream = StreamConsumer(
                    DynamoStreams(
                        self._ctx.streams_client,
                        self._stream_arn,
                        max_attempts=settings.aws_max_attempts,
                    ),
                    LeaseTable(
                        self._ctx.dynamodb_client,
                        settings.state_table,
                        stream_arn=self._stream_arn,
                        lease_duration_s=settings.stream_lease_s,
                        max_attempts=settings.aws_max_attempts,
                    ),
                    stream_arn=self._stream_arn,
                    worker_id=worker_id(),
                    handler=self.on_records,
                    config=StreamConfig(
                        lease_duration_s=settings.stream_lease_s,
                        renew_every_s=settings.stream_lease_s / 3,
                        discover_every_s=settings.stream_discover_every_s,
                        poll_idle_s=settings.stream_poll_idle_s,
                        checkpoint_every_s=settings.stream_checkpoint_every_s,
                        max_attempts=settings.aws_max_attempts,
                    ),
                    metrics=self._metrics,
                )
                tg.create_task(self.stream.run(stop), name="stream-consumer")

    async def _follow(self, stop: asyncio.Event, tg: asyncio.TaskGroup) -> None:
        job: asyncio.Task[None] | None = None
        while not stop.is_set():
            # The job runs beside the polls, so a replica busy re-encrypting still follows.
            if await self._follow_guarded() and (job is None or job.done()):
                job = tg.create_task(self._run_pending_job(stop), name="reencryption-job")
            self._log_lag()
            self._wake.clear()
            await _sleep_until(self._ctx.settings.control_poll_s, stop, self._wake)

    def _log_lag(self) -> None:
        """Stream lag in the logs, once a minute at most."""
        lag = None if self.stream is None else self.stream.lag_s
        now = time.monotonic()
        if lag is not None and now - self._lag_logged_at >= 60:
            self._lag_logged_at = now
            log.info("stream.lag", lag_s=round(lag, 3))

    async def _follow_guarded(self) -> bool:
        try:
            await self._follow_once()
        except UserstoreError as exc:
            self._metrics.control_follow_failures.labels(type(exc).__name__).inc()
            log.warning("control.follow_failed", error=type(exc).__name__, reason=exc.reason)
            return False
        return True

    async def _follow_once(self) -> None:
        self._target = await follow_authority(self._ctx)

    async def _run_pending_job(self, stop: asyncio.Event) -> None:
        """The re-encryption job a rotation asked for, if no other replica holds it."""
        try:
            control = await self._ctx.controls.read(ACTIVE_KEY)
            pending = control is not None and bool(control.body.get("reencrypt_pending"))
            self._metrics.reencryption_pending.set(1 if pending else 0)
            if not pending:
                return
            report = await run_sweep(
                self._ctx,
                rate_per_s=self._ctx.settings.reencrypt_rate_per_s,
                stop=stop,
                metrics=self._metrics,
            )
            if stop.is_set():
                return  # interrupted: checkpoints let the next holder resume
            c = report.counts
            log.info(
                "rotation.job_done",
                scanned=c.scanned,
                reencrypted=c.resealed,
                skipped=c.skipped,
                failed=c.failed,
            )
            # The control records and index keys move too, or the old key could not be retired.
            await move_controls(self._ctx)
            await job_done(self._ctx, report.target.key_ref)
            self._metrics.reencryption_pending.set(0)
        except SweepBusy:
            return  # another replica runs it; we take over if its lease lapses
        except UserstoreError as exc:
            # Retried at the next poll; a sweep resumes from its checkpoints.
            log.warning("rotation.job_failed", error=type(exc).__name__, reason=exc.reason)

    async def on_records(self, records: Sequence[StreamRecord]) -> None:
        """Re-encrypt records the stream shows sealed under a retired key; idempotent."""
        for record in records:
            if is_control(record_user_id(record)):
                self._wake.set()
                continue
            # Until the first control poll succeeds there is no target: leave records alone.
            if self._target is not None:
                work = functools.partial(
                    reencrypt_if_stale, self._resealer, self._target, record, self._metrics
                )
                await self._set_aside.attempt(record, work)


def record_user_id(record: StreamRecord) -> str:
    return str(record.keys.get("user_id", {}).get("S", ""))


async def reencrypt_if_stale(
    resealer: Resealer, target: Target, record: StreamRecord, metrics: Metrics
) -> Resealed | None:
    """Re-encrypt the record behind one stream record if it shows a retired key.

    Shared by the replicas' stream reader and the Lambda stream handler. RetryLater propagates
    (the caller retries from this record); a record failing verification is logged, never
    rewritten, and does not hold up the stream.
    """
    image = record.new_image
    # REMOVE records, and moto's key-only INSERT for an item being created, carry no sealed
    # record to look at; control records are rewritten by their own code paths.
    if image is None or "rev" not in image or is_control(record_user_id(record)):
        return None
    try:
        if not target.is_stale(read_head(dict(image))):
            return None
        outcome = await resealer.reseal(record_user_id(record), target)
    except RecordTampered as exc:
        metrics.verification_failures.inc()
        log.error("security.record_verification_failed", source="stream", frames=frames(exc))
        return None
    if outcome is Resealed.RESEALED:
        log.info("rotation.stream_reencrypted", shard_id=record.shard_id)
    return outcome


class SetAside:
    """Bounds how often one stream record is retried, so a record that keeps failing (a key
    that will not come back, say) never blocks the records behind it on its shard.

    After `max_tries` failed tries it is set aside: logged as a security event, counted, and
    left for `userstore sweep --verify`, which reads every record.
    """

    def __init__(self, max_tries: int, metrics: Metrics) -> None:
        self._max_tries = max_tries
        self._metrics = metrics
        self._failures: dict[str, int] = {}

    async def attempt(self, record: StreamRecord, work: Callable[[], Awaitable[object]]) -> None:
        key = f"{record.shard_id}/{record.sequence_number}"
        try:
            await work()
        except RetryLater as exc:
            tries = self._failures.get(key, 0) + 1
            if tries < self._max_tries:
                self._failures[key] = tries
                raise
            self._failures.pop(key, None)
            self._metrics.stream_records_set_aside.inc()
            log.error(
                "security.stream_record_set_aside",
                shard_id=record.shard_id,
                sequence_number=record.sequence_number,
                error=type(exc).__name__,
                reason=exc.reason,
                tries=tries,
            )
        else:
            self._failures.pop(key, None)


async def _sleep_until(timeout_s: float, *events: asyncio.Event) -> None:
    """Sleep `timeout_s`, or less if one of `events` is set meanwhile."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
