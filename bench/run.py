"""`python -m bench`: run every leg against one moto server, print the table, write the report.

One moto server process and one counting, delaying proxy in front of it (tests/faults/proxy.py)
serve every leg. Each process under test (the userstore worker, the floor, the naive loop) is
its own OS process pointed at the proxy, started on a queue already holding its events, and
measured from its first settled event to its last: CPU and RSS from inside the process (the
probe), AWS calls from the proxy's per-operation counts. Seeding and provisioning go straight to
moto, so they are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import boto3

from bench import costs
from bench.costs import scan_sizes
from bench.items import encode_item
from bench.report import Results, write_report
from bench.subjects import ROOT, Subject, Window, calls_by_operation, clean_environ
from bench.sweeps import raw_scan_and_put, timed_sweep
from bench.traffic import CREATE, DUPLICATE, KINDS, Traffic, send
from tests.faults.proxy import ProxyControl, fault_proxy_process
from tests.harness.emulator import moto_server_process
from userstore.worker.app import aws_clients
from userstore.worker.logs import configure
from userstore.worker.provision import ensure_queues, provision
from userstore.worker.resources import setting_values
from userstore.worker.settings import KeyMode, Settings

USERSTORE, FLOOR, NAIVE, POWERTOOLS = "userstore", "floor", "naive", "powertools"
MODULES = {
    USERSTORE: "bench.driver",
    FLOOR: "bench.floor",
    NAIVE: "bench.naive",
    POWERTOOLS: "bench.powertools",
}
MODES = (KeyMode.KMS, KeyMode.CACHED)
LATENCIES_MS = (0, 20)
IN_FLIGHT = (1, 8, 64)
KINDS_IN_FLIGHT = 32  # the worker's default


SWEEP_ROUNDS = 3
BURST_EVENTS = 61  # one user's burst: a create and 60 updates


@dataclass
class Sizes:
    kind_events: int
    # Every throughput leg (any in-flight limit, the naive loop too) starts on a queue this deep:
    # moto's receive costs more the deeper the queue, so equal depths keep the legs comparable.
    throughput_events: int
    rss_events: tuple[int, int]
    size_users: int = 10  # users of the record-size leg (each a create and 99 updates)
    latency_seconds: float = 20.0  # publishing time of each paced latency leg
    burst_timeout_s: float = 180.0  # how long the 61-event burst may take to drain
    latency_rate: float = 40.0  # events per second in the paced latency legs

    @classmethod
    def parse(cls, args: argparse.Namespace) -> Sizes:
        if args.quick:
            return cls(40, 40, (400, 800), 3, 4.0, args.burst_timeout or 120.0, args.latency_rate)
        first, second = (int(n) for n in args.rss_events.split(","))
        return cls(
            args.events,
            args.throughput_events,
            (first, second),
            args.size_users,
            args.latency_seconds,
            args.burst_timeout or 180.0,
            args.latency_rate,
        )


@dataclass
class Bench:
    moto: str
    proxy: str
    control: ProxyControl
    log: IO[bytes]
    results: Results
    idle_s: float = 20.0
    sqs: Any = field(init=False)
    ddb: Any = field(init=False)
    kms: Any = field(init=False)

    def __post_init__(self) -> None:
        session = boto3.session.Session(region_name="eu-west-2")
        self.sqs = session.client("sqs", endpoint_url=self.moto)
        self.ddb = session.client("dynamodb", endpoint_url=self.moto)
        self.kms = session.client("kms", endpoint_url=self.moto)

    # --- resources ----------------------------------------------------------------------------

    def provision(self, mode: KeyMode) -> Settings:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(
            aws_endpoint_url=self.moto,
            table=f"bench-users-{tag}",
            meta_table=f"bench-materials-{tag}",
            state_table=f"bench-state-{tag}",
            queue=f"bench-events-{tag}.fifo",
            dlq=f"bench-dlq-{tag}.fifo",
            kms_key=f"alias/bench-{tag}",
            key_mode=mode,
        )

        async def go() -> None:
            async with aws_clients(settings) as clients:
                await provision(settings, clients.kms, clients.dynamodb, clients.sqs)

        asyncio.run(go())
        return settings

    def fresh_queue(self, settings: Settings) -> Settings:
        """A new queue for each process under test: a stopped process can leave a long poll
        pending in moto, which would take the next leg's first messages and hide them for a
        visibility timeout."""
        fresh = settings.model_copy(update={"queue": f"bench-q-{uuid.uuid4().hex[:8]}.fifo"})

        async def go() -> None:
            async with aws_clients(fresh) as clients:
                # The queues are encrypted under the storage key provision made.
                storage = await clients.kms.describe_key(KeyId=fresh.storage_kms_key)
                values = setting_values(fresh) | {"storage_key_arn": storage["KeyMetadata"]["Arn"]}
                await ensure_queues(clients.sqs, fresh, values)

        asyncio.run(go())
        return fresh

    def queue_url(self, settings: Settings) -> str:
        return str(self.sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"])

    def env(self, system: str, settings: Settings, in_flight: int) -> dict[str, str]:
        env = clean_environ()
        env["AWS_ENDPOINT_URL"] = self.proxy
        if system == POWERTOOLS:
            env["BENCH_IDEMPOTENCY_TABLE"] = self.idempotency_table(settings)
        if system == USERSTORE:
            env.update(
                USERSTORE_TABLE=settings.table,
                USERSTORE_META_TABLE=settings.meta_table,
                USERSTORE_STATE_TABLE=settings.state_table,
                USERSTORE_QUEUE=settings.queue,
                USERSTORE_DLQ=settings.dlq,
                USERSTORE_KMS_KEY=settings.kms_key,
                USERSTORE_KEY_MODE=settings.key_mode.value,
                USERSTORE_MAX_IN_FLIGHT=str(in_flight),
            )
            return env
        env.update(
            BENCH_QUEUE_URL=self.queue_url(settings),
            BENCH_TABLE=settings.table,
            BENCH_IN_FLIGHT=str(in_flight),
            BENCH_KEY_MODE=settings.key_mode.value,
            BENCH_META_TABLE=settings.meta_table,
            BENCH_KEY_ARN=self.kms.describe_key(KeyId=settings.kms_key)["KeyMetadata"]["Arn"],
            BENCH_TEMPLATE=json.dumps(self.results.template),
        )
        return env

    def idempotency_table(self, settings: Settings) -> str:
        """Powertools' idempotency table beside the user table (key `id`), made once."""
        name = f"{settings.table}-idempotency"
        if name not in self.ddb.list_tables()["TableNames"]:
            self.ddb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        return name

    def revisions(self, settings: Settings) -> int:
        """The sum of every record's revision: it moves if any record was written."""
        total = 0
        for page in self.ddb.get_paginator("scan").paginate(
            TableName=settings.table,
            ConsistentRead=True,
            ProjectionExpression="#r",
            ExpressionAttributeNames={"#r": "rev"},
        ):
            total += sum(int(i["rev"]["N"]) for i in page["Items"] if "rev" in i)
        return total

    def template_from(self, settings: Settings, users: list[str]) -> None:
        """A real sealed record, for the floor to write as its 'already-encrypted item' (one of
        the leg's users: the table also holds the worker's control items)."""
        item = self.ddb.get_item(
            TableName=settings.table, Key={"user_id": {"S": users[0]}}, ConsistentRead=True
        )["Item"]
        self.results.template = encode_item(item)

    # --- one leg ------------------------------------------------------------------------------

    def leg(
        self,
        system: str,
        settings: Settings,
        bodies: list[str],
        in_flight: int,
        label: str,
        idle_s: float = 0.0,
    ) -> Window:
        settings = self.fresh_queue(settings)
        send(self.sqs, self.queue_url(settings), bodies)
        print(f"  {label}: {len(bodies)} events ...", end="", flush=True, file=sys.stderr)
        env = self.env(system, settings, in_flight)
        before = calls_by_operation(self.control.stats().data)
        subject = Subject(MODULES[system], env, self.log)
        try:
            window = subject.measure(self.control, len(bodies), timeout_s=60 + 2 * len(bodies))
            # The whole leg's calls too (start-up included): the window misses the writes of
            # the events in flight when the first one settles.
            window.leg_calls = calls_by_operation(self.control.stats().data)
            window.leg_calls.subtract(before)
            window.leg_calls = +window.leg_calls
            window.leg_events = len(bodies)
            if idle_s:
                # What the worker calls with no events at all (control polls, stream and lease
                # upkeep), so that the per-event figures can leave it out.
                calls0 = calls_by_operation(self.control.stats().data)
                time.sleep(idle_s)
                idle = calls_by_operation(self.control.stats().data)
                idle.subtract(calls0)
                self.results.background[settings.key_mode.value] = (+idle, idle_s)
        finally:
            subject.stop()
        print(
            f" {window.per_second:.0f}/s, {window.cpu_ms_per_event:.2f} ms CPU/event",
            file=sys.stderr,
        )
        return window

    # --- the legs -----------------------------------------------------------------------------

    def kinds(self, sizes: Sizes) -> None:
        """CPU, AWS requests and KMS calls per event, per kind and key mode (no added latency)."""
        self.control.set_rules({})
        for mode in MODES:
            for system in (USERSTORE, POWERTOOLS, FLOOR, NAIVE):
                settings = self.provision(mode)
                traffic = Traffic(sizes.kind_events, uuid.uuid4().hex[:6])
                for kind in KINDS:
                    label = f"{system} {mode.value} {kind}"
                    idle_s = self.idle_s if system == USERSTORE and kind == KINDS[-1] else 0.0
                    revs = self.revisions(settings) if system == USERSTORE else 0
                    window = self.leg(
                        system, settings, traffic.bodies(kind), KINDS_IN_FLIGHT, label, idle_s
                    )
                    if system == USERSTORE:
                        # Every write of a record adds one to its revision: exact record
                        # writes over the whole leg.
                        changed = self.revisions(settings) - revs
                        self.results.record_writes[(system, mode.value, kind)] = changed
                        if kind == DUPLICATE:
                            self.results.duplicate_rev_changes[mode.value] = changed
                    self.results.kinds[(system, mode.value, kind)] = window
                    key = (system, mode.value, kind)
                    self.results.kind_sizes[key] = scan_sizes(
                        self, settings.table, keep=traffic.users
                    )
                    if system == POWERTOOLS:
                        side = scan_sizes(self, self.idempotency_table(settings), "id")
                        self.results.side_sizes[key] = max(side.values(), default=0)
                    if system == USERSTORE and kind == CREATE and not self.results.template:
                        self.template_from(settings, traffic.users)

    def throughput(self, sizes: Sizes) -> None:
        """Creates per second by added latency and in-flight limit."""
        settings = {mode: self.provision(mode) for mode in MODES}
        floor_settings = self.provision(KeyMode.CACHED)
        for latency in LATENCIES_MS:
            self.control.set_rules({"latency_ms": latency})
            for in_flight in IN_FLIGHT:
                n = sizes.throughput_events
                runs: list[tuple[str, KeyMode | None, Settings]]
                runs = [(USERSTORE, m, settings[m]) for m in MODES]
                runs.append((FLOOR, None, floor_settings))
                for system, mode, where in runs:
                    bodies = Traffic(n, uuid.uuid4().hex[:6]).bodies(CREATE)
                    label = f"{system} {mode.value if mode else ''} {latency} ms x{in_flight}"
                    window = self.leg(system, where, bodies, in_flight, label)
                    key = (system, mode.value if mode else "-", latency, in_flight)
                    self.results.throughput[key] = window
            for mode in MODES:
                naive = self.provision(mode)
                bodies = Traffic(sizes.throughput_events, uuid.uuid4().hex[:6]).bodies(CREATE)
                window = self.leg(NAIVE, naive, bodies, 1, f"naive {mode.value} {latency} ms")
                self.results.throughput[(NAIVE, mode.value, latency, 1)] = window
        self.control.set_rules({})
        self.results.sweep_source = settings[KeyMode.CACHED]

    def costs(self, sizes: Sizes, skip: set[str]) -> None:
        """Record sizes, publish-to-applied latency, one user's burst: in each key mode."""
        self.control.set_rules({})
        for mode in MODES:
            if "sizes" not in skip:
                self.results.record_sizes[mode.value] = costs.record_sizes(
                    self, mode, sizes.size_users
                )
            if "latency" not in skip:
                self.results.latency[mode.value] = costs.latency(
                    self, mode, sizes.latency_rate, sizes.latency_seconds
                )
            if "burst" not in skip:
                self.results.bursts[mode.value] = costs.burst(
                    self, mode, BURST_EVENTS, sizes.burst_timeout_s
                )

    def sweep(self, rounds: int) -> None:
        """The re-encryption sweep over the cached-mode throughput table, and a raw loop, in
        alternating rounds (each sweep after a fresh rotation): one round each is at the mercy
        of whatever else the machine does in those few seconds."""
        source = self.results.sweep_source
        assert source is not None
        via_proxy = source.model_copy(update={"aws_endpoint_url": self.proxy})
        for n in range(1, rounds + 1):
            print(f"  sweep, round {n} ...", end="", flush=True, file=sys.stderr)
            sweep = asyncio.run(timed_sweep(via_proxy, self.control))
            print(f" {sweep.per_second:.0f} records/s", file=sys.stderr)
            print(f"  raw scan-and-put, round {n} ...", end="", flush=True, file=sys.stderr)
            raw = asyncio.run(raw_scan_and_put(via_proxy, self.control))
            print(f" {raw.per_second:.0f} records/s", file=sys.stderr)
            self.results.sweep_rounds.append((sweep, raw))

    def rss(self, sizes: Sizes) -> None:
        """A long run: peak RSS of the worker after the first and second size of creates."""
        settings = self.fresh_queue(self.provision(KeyMode.CACHED))
        url = self.queue_url(settings)
        total = sizes.rss_events[1]
        bodies = Traffic(total, uuid.uuid4().hex[:6]).bodies(CREATE)
        sent = 500
        send(self.sqs, url, bodies[:sent])
        env = self.env(USERSTORE, settings, 64)
        subject = Subject(MODULES[USERSTORE], env, self.log)
        started = time.monotonic()
        try:
            while True:
                snap = subject.ask("mark")
                done = int(snap["settled"])
                self.results.rss_series.append((done, int(snap["rss_kb"])))
                for size in sizes.rss_events:
                    if done >= size and size not in self.results.rss:
                        self.results.rss[size] = snap
                        print(f"  rss after {size}: {snap['maxrss_kb']} kB peak", file=sys.stderr)
                if done >= total:
                    break
                if sent < total and sent - done < 500:
                    send(self.sqs, url, bodies[sent : sent + 250])
                    sent += 250
                else:
                    time.sleep(0.5)
                if time.monotonic() - started > 60 + total:
                    raise TimeoutError(f"long run: {done} of {total} settled")
        finally:
            subject.stop()
        self.results.rss_seconds = time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (about 6-10 min)")
    parser.add_argument("--events", type=int, default=200, help="events per kind and key mode")
    parser.add_argument(
        "--throughput-events", type=int, default=200, help="creates per throughput leg"
    )
    parser.add_argument(
        "--rss-events", default="10000,50000", help="the long run's two checkpoints"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated legs to skip: kinds,throughput,sweep,rss,sizes,latency,burst",
    )
    parser.add_argument(
        "--size-users", type=int, default=10, help="users of the record-size leg (100 events each)"
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=20.0,
        help="publishing time of each paced latency leg (40 events/s)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=40.0,
        help="events per second in the paced latency legs (bursts: a quarter as many users)",
    )
    parser.add_argument(
        "--burst-timeout",
        type=float,
        default=0.0,
        help="seconds the 61-event burst may take to drain (default 180; --quick 120)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="EVENTS",
        help="also profile the worker with py-spy over a cached create leg of EVENTS",
    )
    parser.add_argument(
        "--report-from", type=Path, help="only rewrite the report from a saved run's results"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args(argv)
    if args.report_from:
        saved: Results = pickle.loads(args.report_from.read_bytes())  # noqa: S301 - our own file
        print(write_report(saved, args.out, args.out.with_suffix(".png")))
        return 0
    sizes = Sizes.parse(args)
    os.environ.clear()
    os.environ.update(clean_environ())  # dummy credentials; nothing but the emulator is reached
    configure("WARNING")
    skip = set(filter(None, args.skip.split(",")))
    results = Results(command=" ".join(["python -m bench", *(argv or sys.argv[1:])]))
    results.sizes = (
        f"{sizes.kind_events} events per kind and key mode; {sizes.throughput_events} creates "
        f"per throughput leg, each on a queue holding all of them at the start; long run "
        f"{sizes.rss_events[0]:,} then {sizes.rss_events[1]:,} creates"
    )
    started = time.monotonic()
    with ExitStack() as stack:
        moto = stack.enter_context(moto_server_process())
        proxy, control = stack.enter_context(fault_proxy_process(moto))
        log = stack.enter_context(_log_file())
        bench = Bench(moto, proxy, control, log, results, idle_s=5.0 if args.quick else 20.0)
        if "kinds" not in skip:
            print("per kind and key mode:", file=sys.stderr)
            bench.kinds(sizes)
        print("costs:", file=sys.stderr)
        bench.costs(sizes, skip)
        if "throughput" not in skip:
            print("throughput:", file=sys.stderr)
            bench.throughput(sizes)
        else:
            skip.add("sweep")
        if "sweep" not in skip:
            bench.sweep(1 if args.quick else SWEEP_ROUNDS)
        if "rss" not in skip:
            print("long run:", file=sys.stderr)
            bench.rss(sizes)
        results.seconds = time.monotonic() - started
        results.finished = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        results.load = os.getloadavg()[0]
        if args.profile:
            from bench.cpu_profile import profile_worker

            print("profile:", file=sys.stderr)
            results.profile = profile_worker(bench, args.profile)
    saved_to = Path(tempfile.gettempdir()) / "userstore-bench-results.pickle"
    saved_to.write_bytes(pickle.dumps(results))
    print(f"(results saved to {saved_to}; --report-from rewrites the report)", file=sys.stderr)
    table = write_report(results, args.out, args.out.with_suffix(".png"))
    print(table)
    return 0


@contextmanager
def _log_file() -> Iterator[IO[bytes]]:
    path = Path(tempfile.gettempdir()) / f"userstore-bench-{uuid.uuid4().hex[:6]}.log"
    print(f"(logs of the processes under test: {path})", file=sys.stderr)
    with path.open("wb") as log:
        yield log
