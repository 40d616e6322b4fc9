"""The cost legs: stored record sizes, publish-to-applied latency at a paced load, and one
user's burst. Each runs the worker (bench.driver) on a fresh queue against the same emulator and
proxy as every other leg; events are published straight to moto (not counted), records read back
with a plain scan (not counted either).
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bench.measures import BurstRun, LatencyRun, RecordSizes
from bench.subjects import Subject, calls_by_operation
from bench.traffic import create_data, event_body, event_id, history, send, update_data
from bench.units import Sizes, sizes_by_key
from userstore.worker.settings import KeyMode, Settings

if TYPE_CHECKING:
    from bench.run import Bench

BURST_SIZE = 4  # events per user in the paced bursts
SENDERS = 8  # threads publishing the paced legs


def scan_sizes(
    bench: Bench, table: str, key: str = "user_id", keep: Collection[str] | None = None
) -> Sizes:
    """The sizes of a table's items (only those of the users in `keep`, if given: the users
    table also holds the worker's control items)."""
    items: list[dict[str, Any]] = []
    for page in bench.ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    sizes = sizes_by_key(items, key)
    if keep is None:
        return sizes
    wanted = set(keep)
    return {k: v for k, v in sizes.items() if k in wanted}


@contextmanager
def worker(bench: Bench, settings: Settings) -> Iterator[tuple[Subject, str]]:
    """The worker on a fresh queue of its own, and that queue's URL."""
    settings = bench.fresh_queue(settings)
    subject = Subject("bench.driver", bench.env("userstore", settings, 32), bench.log)
    try:
        yield subject, bench.queue_url(settings)
    finally:
        subject.stop()


def _start() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=60)


def record_sizes(bench: Bench, mode: KeyMode, users: int, events: int = 100) -> RecordSizes:
    """Each user's record right after a create of the typical profile, and after the create and
    `events - 1` realistic updates (one to three fields each), all published at once."""
    settings = bench.provision(mode)
    tag = uuid.uuid4().hex[:6]
    rng = random.Random(12)  # noqa: S311 - repeatable test data
    start = _start()
    names = [f"size-{tag}-{n:04d}" for n in range(users)]
    lives = [history(name, n, events, rng, start) for n, name in enumerate(names)]
    profile = len(json.dumps(create_data(0), separators=(",", ":")))
    out = RecordSizes(users=users, events=events, profile_bytes=profile)
    label = f"  record sizes {mode.value}: {users} users x {events} events ..."
    print(label, end="", flush=True, file=sys.stderr)
    with worker(bench, settings) as (subject, url):
        send(bench.sqs, url, [life[0] for life in lives])
        subject.wait_settled(users, timeout_s=120)
        out.after_create = scan_sizes(bench, settings.table, keep=names)
        started = time.monotonic()
        send(bench.sqs, url, [body for life in lives for body in life[1:]])
        subject.wait_settled(users * events, timeout_s=120 + 3 * events)
        out.steady_seconds = time.monotonic() - started
        out.steady = scan_sizes(bench, settings.table, keep=names)
    print(f" {out.steady_seconds:.0f} s", file=sys.stderr)
    return out


def _paced(
    bench: Bench, subject: Subject, url: str, groups: list[list[str]], interval_s: float
) -> LatencyRun:
    """Publish each group (one SendMessageBatch) every `interval_s`, then wait for all. The
    sends go out from a few threads: one SendMessageBatch to a busy moto can take longer than
    the interval, and a late send would lower the rate instead of measuring the worker."""
    settled0 = int(subject.ask("peek")["settled"])
    subject.ask("applied")  # forget what came before
    calls0 = calls_by_operation(bench.control.stats().data)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        sent = []
        for n, group in enumerate(groups):
            pause = started + n * interval_s - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent.append((group, pool.submit(send, bench.sqs, url, group)))
        published = {
            event_id(body): at
            for group, future in sent
            for body, at in zip(group, future.result(), strict=True)
        }
    span = max(published.values()) - min(published.values())
    total = sum(len(g) for g in groups)
    subject.wait_settled(settled0 + total, timeout_s=60 + total)
    applied: dict[str, float] = subject.ask("applied")["applied"]
    calls = calls_by_operation(bench.control.stats().data)
    calls.subtract(calls0)
    shape = "single" if all(len(g) == 1 for g in groups) else "burst"
    ours = [applied[e] for e in published if e in applied]
    return LatencyRun(
        shape=shape,
        events=total,
        publish_seconds=span,
        latencies_ms=[1000 * (applied[e] - t) for e, t in published.items() if e in applied],
        calls=+calls,
        apply_seconds=max(ours) - min(ours) if ours else 0.0,
    )


def latency(bench: Bench, mode: KeyMode, rate: float, seconds: float) -> list[LatencyRun]:
    """At `rate` events a second for `seconds`: single events, each a different user; then
    bursts, `rate / BURST_SIZE` users a second each sending BURST_SIZE events in a row. Every
    event is an update (one to three fields) of a user created beforehand."""
    settings = bench.provision(mode)
    tag = uuid.uuid4().hex[:6]
    rng = random.Random(40)  # noqa: S311 - repeatable test data
    singles = int(rate * seconds)
    bursts = int(rate * seconds / BURST_SIZE)
    users = [f"lat-{tag}-{n:05d}" for n in range(singles + bursts)]
    start = _start()
    creates = [event_body("user.created", u, start, create_data(n)) for n, u in enumerate(users)]

    def update(user: str, n: int, i: int) -> str:
        at = start + timedelta(seconds=1, milliseconds=i)
        return event_body("user.updated", user, at, update_data(rng, n * 10 + i))

    single_groups = [[update(u, n, 0)] for n, u in enumerate(users[:singles])]
    burst_groups = [
        [update(u, n, i) for i in range(BURST_SIZE)] for n, u in enumerate(users[singles:])
    ]
    runs = []
    with worker(bench, settings) as (subject, url):
        send(bench.sqs, url, creates)
        subject.wait_settled(len(users), timeout_s=60 + len(users))
        # The stream reader has read every create: measured is the worker in service, not its
        # stream reader catching up through the setup's writes.
        subject.wait_warm(len(users), timeout_s=60 + len(users))
        for groups, interval in ((single_groups, 1 / rate), (burst_groups, BURST_SIZE / rate)):
            kind = "single events" if len(groups[0]) == 1 else f"bursts of {BURST_SIZE}"
            label = f"  latency {mode.value}, {kind} at {rate:.0f} events/s ..."
            print(label, end="", flush=True, file=sys.stderr)
            run = _paced(bench, subject, url, groups, interval)
            print(f" p50 {run.p(0.5) or 0:.0f} ms, p99 {run.p(0.99) or 0:.0f} ms", file=sys.stderr)
            runs.append(run)
            time.sleep(1)
    return runs


def burst(bench: Bench, mode: KeyMode, events: int, timeout_s: float) -> BurstRun:
    """A create and `events - 1` updates of one user published at once, to a warm worker."""
    settings = bench.provision(mode)
    tag = uuid.uuid4().hex[:6]
    start = _start()
    rng = random.Random(61)  # noqa: S311 - repeatable test data
    # A create and an update: the worker has then opened a record (loading the key materials,
    # cached mode) and its stream reader has read the writes, as a worker in service has.
    warm = history(f"warm-{tag}", 1, 2, random.Random(62), start)  # noqa: S311
    bodies = history(f"burst-{tag}", 0, events, rng, start)
    print(
        f"  burst {mode.value}: {events} events of one user ...",
        end="",
        flush=True,
        file=sys.stderr,
    )
    with worker(bench, settings) as (subject, url):
        for n, body in enumerate(warm, 1):  # one at a time: the update opens the record
            send(bench.sqs, url, [body])
            subject.wait_settled(n, timeout_s=60)
        subject.wait_warm(len(warm))  # the stream reader's start must not overlap the burst
        subject.ask("applied")
        calls0 = calls_by_operation(bench.control.stats().data)
        first = time.time()
        published = dict(zip(map(event_id, bodies), send(bench.sqs, url, bodies), strict=True))
        try:
            subject.wait_settled(len(warm) + events, timeout_s)
            drained = True
        except TimeoutError:
            drained = False
        applied: dict[str, float] = subject.ask("applied")["applied"]
        calls = calls_by_operation(bench.control.stats().data)
        calls.subtract(calls0)
    ours = {e: t for e, t in applied.items() if e in published}
    run = BurstRun(
        events=events,
        settled=len(ours),
        drain_s=max(ours.values()) - first if drained and ours else None,
        timeout_s=timeout_s,
        latencies_ms=[1000 * (t - published[e]) for e, t in ours.items()],
        calls=+calls,
        applied_at=sorted(ours.values()),
    )
    done = (
        f"{run.drain_s:.1f} s" if run.drain_s is not None else f"{run.settled} in {timeout_s:.0f} s"
    )
    print(f" {done}", file=sys.stderr)
    return run
