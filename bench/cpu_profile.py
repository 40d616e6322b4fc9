"""Where the worker's CPU goes: `python -m bench.cpu_profile [EVENTS]` (needs py-spy and ptrace).

Runs one cached-mode create leg as the benchmark does (moto behind the counting proxy, the worker
as its own process, in flight 64), samples the worker with `py-spy record --threads`, and prints
the share of its busy samples spent under each part of the code (a sample counts once per part
it is under; idle waits are left out).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.report import Results
from bench.run import MODULES, USERSTORE, Bench
from bench.subjects import Subject, Window, clean_environ
from bench.traffic import CREATE, Traffic, send
from tests.faults.proxy import fault_proxy_process
from tests.harness.emulator import moto_server_process
from userstore.worker.logs import configure
from userstore.worker.settings import KeyMode

# (part, a substring of a frame under it). First match per part.
PARTS = (
    ("AWS calls (aiobotocore: serialise, sign, send, parse)", "AioBaseClient._make_api_call"),
    ("  of which DynamoDB PutItem of the record", "UsersTable.put"),
    ("  of which the stream reader's GetRecords and checkpoints", "worker/streams/"),
    ("encryption and signing (crypto threads)", "ItemCipher._seal"),
    ("opening records (crypto threads)", "ItemCipher._open"),
    ("event parsing and validation", "parse_event"),
    ("merged-profile validation", "_validated_view"),
    ("merge and record layout", "worker/profile.py"),
    ("structured logs", "structlog"),
    ("metrics", "prometheus_client"),
    ("the benchmark's probe", "probe.py"),
)
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "select (selectors.py", "_serve (")


def summarize(raw: Path) -> list[tuple[str, float]]:
    busy = 0
    parts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(frames[-1].startswith(leaf) or leaf in frames[-1] for leaf in IDLE_LEAVES):
            continue
        busy += int(count)
        for part, marker in PARTS:
            if any(marker in frame for frame in frames):
                parts[part] += int(count)
    return [(part, parts[part] / busy if busy else 0.0) for part, _ in PARTS]


def profile_worker(bench: Bench, events: int) -> tuple[Window, list[tuple[str, float]]]:
    """One cached-mode create leg, in flight 64, with py-spy sampling the worker."""
    raw = Path(tempfile.gettempdir()) / "userstore-bench-profile.txt"
    settings = bench.fresh_queue(bench.provision(KeyMode.CACHED))
    send(bench.sqs, bench.queue_url(settings), Traffic(events, "prof").bodies(CREATE))
    subject = Subject(MODULES[USERSTORE], bench.env(USERSTORE, settings, 64), bench.log)
    try:
        subject.wait_settled(1, 120)
        spy = subprocess.Popen(  # noqa: S603 - py-spy from our own virtualenv
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(subject.proc.pid),
                "--threads",
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        window = subject.measure(bench.control, events, timeout_s=600)
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    finally:
        subject.stop()
    return window, summarize(raw)


def main() -> int:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    os.environ.clear()
    os.environ.update(clean_environ())
    configure("WARNING")
    with (
        moto_server_process() as moto,
        fault_proxy_process(moto) as (proxy, control),
        open(os.devnull, "wb") as log,
    ):
        bench = Bench(moto, proxy, control, log, Results("profile"))
        window, shares = profile_worker(bench, events)
    print(f"{window.events} creates, {window.cpu_ms_per_event:.2f} ms CPU each (under py-spy)")
    for part, share in shares:
        print(f"{share:6.1%}  {part}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
