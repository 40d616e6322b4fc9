"""Every shell block of the README's quick start and operations sections runs as written, in
order, against a moto server this test starts (endpoint, credentials and region in the
environment, as a reader would set them; `userstore` from the project's virtualenv on PATH), or
PLANS says why it does not.

A block the README gains is picked up by itself: until PLANS names it (run, or not and why), this
test fails, and so it does for a planned block the README no longer has. Block ids:
tests/harness/readme_blocks.py (heading, bold lead-in and number, or an explicit
`<!-- block: NAME -->` marker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import boto3
import pytest

from tests.harness.emulator import ROOT, moto_server_process
from tests.harness.factories import event_dict
from tests.harness.readme_blocks import Block, shell_blocks
from tests.harness.traffic import NOW, publish_with_boto3
from tests.harness.waiting import queue_counts, wait_until
from tests.harness.worker_process import background, stop
from userstore.worker.settings import Settings

README = ROOT / "README.md"
SECTIONS = ("Quick start", "Operations")
BLOCK_TIMEOUT_S = 60


@dataclass(frozen=True)
class NotRun:
    reason: str


@dataclass(frozen=True)
class Run:
    # placeholder in the block -> the name of a value this test makes (see `values`)
    fill: Mapping[str, str] = field(default_factory=dict)
    # the start of a line that is left out -> why
    skip_lines: Mapping[str, str] = field(default_factory=dict)
    # what the block acts on, made first (and values to fill in), checked after it ran: SETUPS
    setup: str | None = None


PLANS: Mapping[str, NotRun | Run] = {
    "quick-start#1": NotRun(
        "`./dev test` is the suite this test is part of (CI runs it); `./dev demo` first installs"
        " the embedded extra, then runs for a minute: tests/e2e/test_cli.py's"
        " test_demo_reports_outcomes_ciphertext_and_dead_letters runs `userstore demo`"
    ),
    "operations/dead-letters#1": Run(setup="an out-of-range dead letter"),
    "operations/rotating-keys#1": Run(
        fill={"arn:aws:kms:eu-west-2:111122223333:key/...": "new_key_arn"},
        skip_lines={
            "aws kms disable-key": "the AWS CLI is not a dependency, and the key id is the"
            " reader's; disabling the old key is proven in tests/e2e/test_key_retirement_e2e.py",
        },
        setup="a key to rotate to",
    ),
}


def prepared(block: Block, plan: Run, values: Mapping[str, str]) -> str:
    """The block's text with placeholders filled and the planned lines left out; a placeholder
    or line the block no longer has fails (the plan is stale)."""
    text = block.text
    for placeholder, name in plan.fill.items():
        assert placeholder in text, f"{block.id}: no {placeholder!r} to fill any more"
        text = text.replace(placeholder, values[name])
    lines = text.splitlines()
    for start in plan.skip_lines:
        assert any(line.startswith(start) for line in lines), f"{block.id}: no line {start!r}"
    kept = [line for line in lines if not any(line.startswith(s) for s in plan.skip_lines)]
    return "\n".join(kept) + "\n"


def out_of_range_dead_letter(
    env: dict[str, str], log: Path, values: dict[str, str]
) -> Callable[[], None]:
    """An event older than the tombstone horizon, dead-lettered by a real worker as
    EventOutOfRange: the block lists it, shows the dry run, then redrives it to the queue."""
    sqs = boto3.session.Session(region_name="eu-west-2").client(
        "sqs", endpoint_url=env["AWS_ENDPOINT_URL"]
    )
    url, dlq = (sqs.get_queue_url(QueueName=name)["QueueUrl"] for name in (QUEUE, DLQ))
    old = NOW - timedelta(days=60)
    event = event_dict("urn:fdc:gov.uk:2022:readme-1", "user.created", 0, {}, base=old)
    publish_with_boto3(sqs, url, [(event["user_id"], event["event_id"], json.dumps(event))])
    with background(["userstore", "run"], env | {"USERSTORE_WAIT_TIME_S": "1"}, log) as proc:
        wait_until(lambda: queue_counts(sqs, dlq)[0] == 1, 60, "the dead letter", proc, log)
        stop(proc, 30, log)

    def check() -> None:
        assert queue_counts(sqs, dlq) == (0, 0, 0), "the dead letter is still there"
        assert queue_counts(sqs, url)[0] == 1, "the event is not back on the queue"

    return check


def a_key_to_rotate_to(
    env: dict[str, str], log: Path, values: dict[str, str]
) -> Callable[[], None]:
    """A new KMS key (its ARN fills the README's placeholder); after the block, the alias the
    workers use points at it."""
    kms = boto3.session.Session(region_name="eu-west-2").client(
        "kms", endpoint_url=env["AWS_ENDPOINT_URL"]
    )
    values["new_key_arn"] = kms.create_key(Description="readme next")["KeyMetadata"]["Arn"]

    def check() -> None:
        active = kms.describe_key(KeyId=Settings().kms_key)["KeyMetadata"]["Arn"]
        assert active == values["new_key_arn"], "the alias was not moved to the new key"

    return check


Setup = Callable[[dict[str, str], Path, dict[str, str]], Callable[[], None]]
SETUPS: Mapping[str, Setup] = {
    "an out-of-range dead letter": out_of_range_dead_letter,
    "a key to rotate to": a_key_to_rotate_to,
}
QUEUE, DLQ = Settings().queue, Settings().dlq


def reader_env(endpoint: str) -> dict[str, str]:
    """What a reader's shell would hold: the endpoint, credentials and region, no userstore
    setting (the README's commands use the defaults), the virtualenv's `userstore` on PATH."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("USERSTORE_", "AWS_", "PYTEST_"))
    }
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION="eu-west-2",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def test_every_block_is_planned() -> None:
    blocks = shell_blocks(README.read_text(encoding="utf-8"), SECTIONS)
    ids = [block.id for block in blocks]
    assert len(ids) == len(set(ids)), f"two README blocks share an id: {ids}"
    unknown = [b for b in blocks if b.id not in PLANS]
    assert not unknown, (
        "README shell blocks with no plan in this test (run, or NotRun and why):\n"
        + ("\n".join(f"  {b.id}:\n    " + b.text.strip().replace("\n", "\n    ") for b in unknown))
    )
    assert sorted(set(PLANS) - set(ids)) == [], "planned blocks the README no longer has"


@pytest.mark.timeout(180)
def test_the_shell_blocks_run_as_written(tmp_path: Path) -> None:
    blocks = [
        b for b in shell_blocks(README.read_text(encoding="utf-8"), SECTIONS) if b.id in PLANS
    ]
    runs = [(b, plan) for b in blocks if isinstance(plan := PLANS[b.id], Run)]
    assert runs, "no README block was run"
    with moto_server_process() as endpoint:
        env = reader_env(endpoint)
        # The reader has provisioned, as the quick start and the local stack have them do.
        done = subprocess.run(
            ["userstore", "provision"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-2000:]
        values: dict[str, str] = {}
        for block, plan in runs:
            log = tmp_path / f"setup-{len(values)}.log"
            check = SETUPS[plan.setup](env, log, values) if plan.setup else None
            script = prepared(block, plan, values)
            ran = subprocess.run(
                ["bash", "-e", "-u", "-o", "pipefail", "-c", script],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
                check=False,
            )
            where = f"README block {block.id}:\n{script}\nstdout:\n{ran.stdout[-2000:]}"
            assert ran.returncode == 0, f"{where}\nstderr:\n{ran.stderr[-3000:]}"
            assert "Traceback" not in ran.stderr, f"{where}\nstderr:\n{ran.stderr[-3000:]}"
            if check is not None:
                check()
