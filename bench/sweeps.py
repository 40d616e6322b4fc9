"""The re-encryption sweep (worker.sweep, in this process) beside a raw scan-and-put loop.

Both run in the orchestrating process against the proxy, one after the other, over the same
table: the sweep re-encrypts every record after a rotation to a new material version; the raw
loop then scans the same table and puts every item back unchanged, with the sweep's parallelism
(4 segments, 8 writes in flight per segment, pages of 200) and nothing else: no lease, no
checkpoints, no decryption, no encryption, no conditions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiobotocore.session import get_session

from bench.subjects import Window, calls_by_operation
from userstore.worker.app import components
from userstore.worker.aws import client_config
from userstore.worker.rotation import rotate_key
from userstore.worker.settings import Settings
from userstore.worker.sweep import run_sweep

SEGMENTS = 4
PARALLEL_PER_SEGMENT = 8
PAGE = 200


async def timed_sweep(settings: Settings, control: Any) -> Window:
    async with components(settings) as parts:
        await rotate_key(parts, "new")
        calls0 = calls_by_operation(control.stats().data)
        cpu0, t0 = time.process_time(), time.monotonic()
        report = await run_sweep(parts, segments=SEGMENTS, rate_per_s=1e9)
        cpu1, t1 = time.process_time(), time.monotonic()
    calls = calls_by_operation(control.stats().data)
    calls.subtract(calls0)
    if report.counts.failed:
        raise RuntimeError(f"sweep: {report.counts.failed} records failed")
    return Window(report.counts.resealed, t1 - t0, cpu1 - cpu0, +calls)


async def raw_scan_and_put(settings: Settings, control: Any) -> Window:
    config = client_config(SEGMENTS * PARALLEL_PER_SEGMENT)
    async with get_session().create_client(
        "dynamodb", endpoint_url=settings.aws_endpoint_url, config=config
    ) as ddb:
        calls0 = calls_by_operation(control.stats().data)
        cpu0, t0 = time.process_time(), time.monotonic()
        counts = await asyncio.gather(*(_segment(ddb, settings.table, n) for n in range(SEGMENTS)))
        cpu1, t1 = time.process_time(), time.monotonic()
    calls = calls_by_operation(control.stats().data)
    calls.subtract(calls0)
    return Window(sum(counts), t1 - t0, cpu1 - cpu0, +calls)


async def _segment(ddb: Any, table: str, segment: int) -> int:
    gate = asyncio.Semaphore(PARALLEL_PER_SEGMENT)
    written = 0
    start: dict[str, Any] | None = None

    async def put(item: dict[str, Any]) -> None:
        async with gate:
            await ddb.put_item(TableName=table, Item=item)

    while True:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "Segment": segment,
            "TotalSegments": SEGMENTS,
            "Limit": PAGE,
        }
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        page = await ddb.scan(**kwargs)
        items = page.get("Items", [])
        await asyncio.gather(*(put(i) for i in items))
        written += len(items)
        start = page.get("LastEvaluatedKey")
        if start is None:
            return written
