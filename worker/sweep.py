"""The re-encryption sweep: find every record not sealed under the active key, re-encrypt it.

Records are found from signed-only bookkeeping (`key_ref`, `email_idx`) without decrypting. The
table is scanned in parallel segments; after each page a segment's position and counts are
checkpointed in the state table, so a sweep that is killed resumes where it stopped and its
report counts every record once. One sweep per target runs at a time (a lease in the state
table). Re-encryption itself is worker.rotation.Resealer: conditioned on the record's revision,
content unchanged, verification failures reported and never "repaired".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from aiolimiter import AsyncLimiter

from .app import Components
from .aws import Refused, call
from .control import is_control
from .errors import RecordTampered, UserstoreError
from .errors import SweepBusy as SweepBusy
from .logs import get_logger
from .metrics import Metrics
from .provision import STATE_KEY
from .record import read_head
from .rotation import Resealed, Resealer, Target, current_target
from .store import StoredRecord

log = get_logger("userstore.sweep")

_PAGE_SIZE = 200
_PARALLEL_PER_SEGMENT = 8
_MAX_FAILED_IDS = 100


@dataclass
class SweepCounts:
    scanned: int = 0
    resealed: int = 0
    current: int = 0
    skipped: int = 0
    failed: int = 0

    def add(self, other: SweepCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_item(self) -> dict[str, Any]:
        return {f.name: {"N": str(getattr(self, f.name))} for f in fields(self)}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> SweepCounts:
        return cls(**{f.name: int(item.get(f.name, {}).get("N", "0")) for f in fields(cls)})


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


@dataclass
class _Checkpoint:
    last_key: dict[str, Any] | None = None
    done: bool = False
    counts: SweepCounts = field(default_factory=SweepCounts)
    failed_ids: list[str] = field(default_factory=list)


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


class _State:
    """Sweep bookkeeping in the state table: one item per segment, one for the lease."""

    def __init__(self, parts: Components, job: str) -> None:
        self._ddb = parts.clients.dynamodb
        self._table = parts.settings.state_table
        self._attempts = parts.settings.aws_max_attempts
        self._job = job
        self.lease_s = parts.settings.sweep_lease_s
        self.owner = uuid.uuid4().hex

    def _key(self, suffix: str) -> dict[str, Any]:
        return {STATE_KEY: {"S": f"sweep/{self._job}/{suffix}"}}

    async def take_lease(self) -> None:
        now = time.time()
        try:
            await call(
                "PutItem",
                self._ddb.put_item,
                max_attempts=self._attempts,
                TableName=self._table,
                Item={
                    **self._key("lease"),
                    "owner": {"S": self.owner},
                    "expires_at": {"N": str(now + self.lease_s)},
                },
                ConditionExpression="attribute_not_exists(#o) OR expires_at < :now OR #o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":now": {"N": str(now)}, ":me": {"S": self.owner}},
                expected=frozenset({"ConditionalCheckFailedException"}),
            )
        except Refused:
            raise SweepBusy("another sweep for this target is running") from None

    async def release_lease(self) -> None:
        await call(
            "DeleteItem",
            self._ddb.delete_item,
            max_attempts=self._attempts,
            TableName=self._table,
            Key=self._key("lease"),
        )

    async def load(self, segment: int) -> _Checkpoint:
        response = await call(
            "GetItem",
            self._ddb.get_item,
            max_attempts=self._attempts,
            TableName=self._table,
            Key=self._key(f"segment-{segment}"),
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return _Checkpoint()
        last = item.get("last_key", {}).get("S")
        return _Checkpoint(
            last_key=json.loads(last) if last else None,
            done=item["done"]["BOOL"],
            counts=SweepCounts.from_item(item),
            failed_ids=[v["S"] for v in item.get("failed_ids", {}).get("L", [])],
        )

    async def save(self, segment: int, checkpoint: _Checkpoint) -> None:
        item = {
            **self._key(f"segment-{segment}"),
            "done": {"BOOL": checkpoint.done},
            "failed_ids": {"L": [{"S": uid} for uid in checkpoint.failed_ids[:_MAX_FAILED_IDS]]},
            **checkpoint.counts.as_item(),
        }
        if checkpoint.last_key is not None:
            item["last_key"] = {"S": json.dumps(checkpoint.last_key)}
        await call(
            "PutItem",
            self._ddb.put_item,
            max_attempts=self._attempts,
            TableName=self._table,
            Item=item,
        )

    async def forget(self, segments: int) -> None:
        for segment in range(segments):
            await call(
                "DeleteItem",
                self._ddb.delete_item,
                max_attempts=self._attempts,
                TableName=self._table,
                Key=self._key(f"segment-{segment}"),
            )


async def run_sweep(
    parts: Components,
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
    target = await current_target(parts)
    await parts.cipher.activate(target.key_ref)
    state = _State(parts, job_id(target, segments) + ("-verify" if verify else ""))
    deadline = time.monotonic() + wait_for_lease_s
    while True:
        try:
            await state.take_lease()
            break
        except SweepBusy:
            if time.monotonic() >= deadline:
                raise
            log.info("sweep.waiting_for_lease")
            await asyncio.sleep(1.0)
    try:
        saved = [await state.load(s) for s in range(segments)]
        if all(cp.done for cp in saved):
            await state.forget(segments)  # the last sweep finished: this is a new one
            saved = [_Checkpoint() for _ in range(segments)]
        report = SweepReport(
            target, SweepCounts(), resumed=any(cp.last_key or cp.done for cp in saved)
        )
        sweep = _Sweep(
            parts, state, target, report, rate_per_s, on_scanned, stop, verify, metrics, stop_at
        )
        renewer = asyncio.create_task(_renew(state))
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
        await state.release_lease()


async def _renew(state: _State) -> None:
    while True:
        await asyncio.sleep(state.lease_s / 3)
        await state.take_lease()


class _Sweep:
    def __init__(
        self,
        parts: Components,
        state: _State,
        target: Target,
        report: SweepReport,
        rate_per_s: float,
        on_scanned: Callable[[int], object] | None,
        stop: asyncio.Event | None,
        verify: bool,
        metrics: Metrics | None,
        stop_at: float | None = None,
    ) -> None:
        self._parts = parts
        self._stop_at = stop_at
        self._rate_per_s = rate_per_s
        self._metrics = metrics
        self._verify = verify
        self._state = state
        self._target = target
        self._report = report
        self._limiter = AsyncLimiter(rate_per_s, 1)
        self._resealer = Resealer(
            parts.store,
            parts.cipher,
            parts.index,
            max_conflicts=parts.settings.max_conflict_retries,
        )
        self._on_scanned = on_scanned
        self._stop = stop or asyncio.Event()

    async def segment(self, segment: int, segments: int, checkpoint: _Checkpoint) -> None:
        self._report.counts.add(checkpoint.counts)
        self._report.failed_user_ids += checkpoint.failed_ids
        if checkpoint.done:
            return
        gate = asyncio.Semaphore(_PARALLEL_PER_SEGMENT)
        settings = self._parts.settings
        while not self._stop.is_set():
            remaining_s = None if self._stop_at is None else self._stop_at - time.monotonic()
            if remaining_s is not None and remaining_s <= 0:
                return  # out of time: the checkpoint saved after the last page is where to resume
            kwargs: dict[str, Any] = {
                "TableName": settings.table,
                "Segment": segment,
                "TotalSegments": segments,
                "Limit": page_limit(remaining_s, self._rate_per_s, segments),
                # Whole items, not a projection of the bookkeeping: a scan is charged by item size
                # either way, and the item read here is what is resealed, which saves a GetItem
                # per stale record (the write is still conditioned on its revision).
                "ConsistentRead": True,
            }
            if checkpoint.last_key is not None:
                kwargs["ExclusiveStartKey"] = checkpoint.last_key
            page = await call(
                "Scan",
                self._parts.clients.dynamodb.scan,
                max_attempts=settings.aws_max_attempts,
                **kwargs,
            )
            items = [i for i in page.get("Items", []) if not is_control(i["user_id"]["S"])]
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
            checkpoint.last_key = page.get("LastEvaluatedKey")
            checkpoint.done = checkpoint.last_key is None
            # Position and counts are saved together, after the page: a kill redoes at most one
            # page, whose records re-encrypted before the kill then count as current. So every
            # record is counted once.
            await self._state.save(segment, checkpoint)
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
                    await self._parts.cipher.open(record.item)  # verification only
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
