"""End to end: `userstore sweep` killed halfway (SIGKILL) resumes from its checkpoints."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime

import boto3
import pytest

from tests.conftest import make_settings, provision_settings
from tests.e2e.test_worker_process import env_for, scan_all, userstore
from tests.integration.helpers import event
from worker.app import components
from worker.settings import Settings

pytestmark = pytest.mark.e2e

USERS = 600


async def _load(settings: Settings) -> None:
    async with components(settings) as parts:
        now = datetime.now(UTC).isoformat()
        for n in range(USERS):
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
