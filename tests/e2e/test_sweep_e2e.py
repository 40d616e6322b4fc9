"""End to end: `userstore sweep` killed halfway (SIGKILL) resumes from its checkpoints; scheduled
sweeps (the EventBridge Scheduler handler, `userstore sweep --max-duration`) go in time-boxed
slices, each resuming where the last stopped, and an overlapping one does nothing."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from tests.harness.counting import event
from tests.harness.settings import make_settings, provision_settings, settings_env
from tests.harness.stored import scan_all
from tests.harness.worker_process import env_for, userstore
from userstore.worker import lambdas
from userstore.worker.app import components
from userstore.worker.keyref import KeyRef
from userstore.worker.reseal import Target
from userstore.worker.rotation import rotate_key
from userstore.worker.scheduled import ScheduledReport, SweepStatus, run_scheduled_sweep
from userstore.worker.settings import Settings
from userstore.worker.sweep import job_id

USERS = 600


async def _load(settings: Settings, users: int = USERS) -> None:
    async with components(settings) as parts:
        now = datetime.now(UTC).isoformat()
        for n in range(users):
            user = f"urn:fdc:gov.uk:2022:sweep-{n:04d}-{uuid.uuid4().hex[:6]}"
            data = {"email": f"s{n}@example.org", "given_name": f"G{n}"}
            await parts.handler.handle(event(f"c-{user}", "user.created", user, now, data), {})


def _segment_progress(ddb: object, table: str) -> int:
    items = scan_all(ddb, table)
    return sum(
        int(i.get("scanned", {}).get("N", "0"))
        for i in items
        if i["lease_key"]["S"].startswith("sweep/")
    )


@pytest.mark.timeout(300)
def test_sweep_killed_halfway_resumes_and_counts_every_record_once(aws_endpoint: str) -> None:
    settings = asyncio.run(provision_settings(make_settings(aws_endpoint)))
    asyncio.run(_load(settings))
    env = env_for(settings) | {"USERSTORE_SWEEP_LEASE_S": "4"}
    session = boto3.session.Session(region_name=settings.aws_region)
    ddb = session.client("dynamodb", endpoint_url=aws_endpoint)
    new_key = session.client("kms", endpoint_url=aws_endpoint).create_key()["KeyMetadata"]["Arn"]
    rotated = subprocess.run(
        userstore("rotate", "--to", new_key), env=env, capture_output=True, text=True, timeout=60
    )
    assert rotated.returncode == 0, rotated.stderr

    # Slow enough (40 records/s) to be caught halfway.
    first = subprocess.Popen(
        userstore("sweep", "--segments", "2", "--rate", "40"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while _segment_progress(ddb, settings.state_table) < 200:
        assert first.poll() is None, "the sweep finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    done_before = _segment_progress(ddb, settings.state_table)
    assert 0 < done_before < USERS

    second = subprocess.run(
        userstore("sweep", "--segments", "2", "--rate", "1000"),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    report = second.stdout
    assert report.startswith("resumed sweep")
    counts = {
        name: int(value)
        for name, value in re.findall(
            r"(scanned|re-encrypted|already current|changed meanwhile\)|failed) (\d+)", report
        )
    }
    # Every record exactly once across both runs: pages done before the kill count as
    # re-encrypted, records of the page cut short were re-encrypted again or found current.
    assert counts["scanned"] == USERS
    assert (
        counts["re-encrypted"] + counts["already current"] + counts["changed meanwhile)"] == USERS
    )
    assert counts["failed"] == 0
    refs = {
        i["key_ref"]["S"]
        for i in scan_all(ddb, settings.table)
        if not i["user_id"]["S"].startswith("userstore control/")
    }
    assert refs == {f"kms:{new_key}"}


# --- scheduled sweeps ------------------------------------------------------------------------

SCHEDULED_USERS = 300
_LAMBDA_MARGIN_S = 3.0  # userstore.worker.lambdas._DEADLINE_MARGIN_S


class FakeContext:
    """A Lambda context whose function times out `timeout_s` after it is made."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _rotate(settings: Settings) -> str:
    new_key = boto3.client(
        "kms", endpoint_url=settings.aws_endpoint_url, region_name=settings.aws_region
    ).create_key()["KeyMetadata"]["Arn"]

    async def go() -> str:
        async with components(settings) as parts:
            return str(await rotate_key(parts, new_key))

    return asyncio.run(go())


def _users(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {
        i["user_id"]["S"]: i
        for i in scan_all(ddb, table)
        if not i["user_id"]["S"].startswith("userstore control/")
    }


def _lambda_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def lambda_runtime() -> Iterator[None]:
    yield
    lambdas.close_runtime()


@pytest.mark.timeout(300)
def test_scheduled_sweep_handler_resumes_in_slices_until_done(
    aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, lambda_runtime: None
) -> None:
    settings = asyncio.run(provision_settings(make_settings(aws_endpoint)))
    asyncio.run(_load(settings, SCHEDULED_USERS))
    ddb = boto3.client("dynamodb", endpoint_url=aws_endpoint, region_name=settings.aws_region)
    revs_before = {u: int(i["rev"]["N"]) for u, i in _users(ddb, settings.table).items()}
    assert len(revs_before) == SCHEDULED_USERS
    new_ref = _rotate(settings)
    _lambda_env(settings, monkeypatch)

    # A 1.5 s budget at 60 re-encryptions/s: several invocations, each well inside its timeout.
    timeout_s = _LAMBDA_MARGIN_S + 1.5
    schedule_input = {"segments": 2, "rate": 60}
    reports: list[dict[str, Any]] = []
    while not reports or reports[-1]["status"] != "done":
        assert len(reports) < 40, reports[-1]
        context = FakeContext(timeout_s)
        reports.append(lambdas.sweep_handler(schedule_input, context))
        assert time.monotonic() < context.deadline, "the invocation ran past its timeout"

    assert len(reports) > 1
    assert {r["status"] for r in reports[:-1]} == {"unfinished"}
    assert all(r["key_ref"] == new_ref and r["pending"] for r in reports)

    def total(name: str) -> int:
        return sum(int(r["run"][name]) for r in reports)

    # Every record scanned once and re-encrypted once over all the invocations.
    assert total("scanned") == total("resealed") == SCHEDULED_USERS
    assert total("current") == total("skipped") == total("failed") == 0
    assert reports[-1]["job"] == {
        "scanned": SCHEDULED_USERS,
        "resealed": SCHEDULED_USERS,
        "current": 0,
        "skipped": 0,
        "failed": 0,
    }
    after = _users(ddb, settings.table)
    assert {i["key_ref"]["S"] for i in after.values()} == {new_ref}
    assert {u: int(i["rev"]["N"]) for u, i in after.items()} == {
        u: rev + 1 for u, rev in revs_before.items()
    }

    # The job is marked done: the next tick reads the control record and scans nothing.
    again = lambdas.sweep_handler(schedule_input, FakeContext(timeout_s))
    assert (again["status"], again["pending"], again["run"]["scanned"]) == ("done", False, 0)
    assert lambdas._runtime is not None
    metrics = lambdas._runtime.metrics
    assert metrics.count("userstore_sweep_records", {"outcome": "resealed"}) == SCHEDULED_USERS


@pytest.mark.timeout(300)
def test_overlapping_scheduled_sweeps_do_not_both_run(
    aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, lambda_runtime: None
) -> None:
    settings = asyncio.run(provision_settings(make_settings(aws_endpoint)))
    asyncio.run(_load(settings, 60))
    _lambda_env(settings, monkeypatch)
    # A warm container (an idle tick), so the overlapping invocation below starts at once.
    assert lambdas.sweep_handler({}, FakeContext(60))["pending"] is False
    new_ref = _rotate(settings)
    ddb = boto3.client("dynamodb", endpoint_url=aws_endpoint, region_name=settings.aws_region)

    # The first "invocation" runs in a thread of its own, as another container would: slowly.
    first: dict[str, ScheduledReport] = {}

    async def slow() -> None:
        async with components(settings) as parts:
            first["report"] = await run_scheduled_sweep(parts, max_duration_s=60, rate_per_s=8)

    thread = threading.Thread(target=lambda: asyncio.run(slow()))
    thread.start()
    deadline = time.monotonic() + 30
    while not any(
        i["lease_key"]["S"].endswith("/lease") for i in scan_all(ddb, settings.state_table)
    ):
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)

    started = time.monotonic()
    second = lambdas.sweep_handler({}, FakeContext(60))
    assert second["status"] == "busy"
    assert second["run"]["scanned"] == 0
    assert time.monotonic() - started < 5  # at once: no waiting for the lease
    thread.join(timeout=60)
    assert not thread.is_alive()
    report = first["report"]
    assert (report.status, report.job.resealed) == (SweepStatus.DONE, 60)
    assert {i["key_ref"]["S"] for i in _users(ddb, settings.table).values()} == {new_ref}


@pytest.mark.timeout(300)
def test_sweep_max_duration_exit_codes(aws_endpoint: str) -> None:
    settings = asyncio.run(provision_settings(make_settings(aws_endpoint)))
    asyncio.run(_load(settings, 40))
    env = env_for(settings)
    new_ref = _rotate(settings)

    def sweep(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            userstore("sweep", "--segments", "2", *extra),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    # Another sweep holds this job's lease: exit 5 at once, one line, nothing done.
    ddb = boto3.client("dynamodb", endpoint_url=aws_endpoint, region_name=settings.aws_region)
    lease = {"S": f"sweep/{job_id(Target(KeyRef.parse(new_ref), 1), 2)}/lease"}
    ddb.put_item(
        TableName=settings.state_table,
        Item={
            "lease_key": lease,
            "owner": {"S": "another"},
            "expires_at": {"N": str(time.time() + 600)},
        },
    )
    busy = sweep("--max-duration", "30")
    assert busy.returncode == 5, busy.stderr[-2000:]
    assert busy.stderr.strip().splitlines()[-1] == (
        "userstore: another sweep for this target is running; nothing done"
    )
    ddb.delete_item(TableName=settings.state_table, Key={"lease_key": lease})

    codes = []
    while not codes or codes[-1] == 4:
        assert len(codes) < 30
        # A run may re-encrypt a second's worth at once (the limiter's bucket starts full), so
        # the rate is a quarter of the records: no run can do them all in its half second.
        run = sweep("--max-duration", "0.5", "--rate", "10")
        assert "Traceback" not in run.stderr
        codes.append(run.returncode)
    assert codes[-1] == 0, run.stderr[-2000:]
    assert len(codes) > 1
    assert "sweep done" in run.stdout and "job so far scanned 40, re-encrypted 40" in run.stdout

    idle = sweep("--max-duration", "30")
    assert idle.returncode == 0
    assert idle.stdout.startswith("no re-encryption job pending")
