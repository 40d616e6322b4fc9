"""Events routed to the worker's queue by AWS services, through moto's own delivery: an
EventBridge rule with the queue as its SQS target, and an SNS topic with the queue subscribed
(raw message delivery on and off). The provisioned queue as it is, the real `userstore` process.

moto drops an EventBridge event bound for a FIFO queue without content-based deduplication,
silently, as AWS refuses it: the rule test fails on a queue provisioned without it. ministack
delivers either way, so these run on moto only: each test starts its own moto server (its own
port), and on a ministack run they are deselected (they don't take `aws_endpoint`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.harness.emulator import ROOT, moto_server_process
from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles
from tests.harness.traffic import make_events
from tests.harness.waiting import queue_counts, take_dead_letters, wait_drained
from tests.harness.worker_process import (
    Provisioned,
    background,
    provision_worker,
    run_cli,
    stop,
    userstore,
)

SOURCE = "com.example.accounts"


@pytest.fixture
def own_moto() -> Iterator[str]:
    with moto_server_process() as url:
        yield url


def _client(service: str, p: Provisioned) -> Any:
    return boto3.client(
        service, endpoint_url=p.settings.aws_endpoint_url, region_name=p.settings.aws_region
    )


def _queue_arn(p: Provisioned) -> str:
    got = p.sqs.get_queue_attributes(QueueUrl=p.url, AttributeNames=["QueueArn"])
    return str(got["Attributes"]["QueueArn"])


def _worker_applies(p: Provisioned, events: list[dict[str, Any]], log: Path) -> None:
    """The worker drains the queue; every event applied, none dead-lettered; `userstore get`
    prints a user's profile as the reference model has it."""
    with background(userstore("run"), p.env, log) as worker:
        wait_drained(p.sqs, p.url)
        stop(worker, 30, log)
    assert take_dead_letters(p.sqs, p.dlq) == [], log.read_text()[-3000:]
    expected = expected_profiles(events)
    assert read_profiles(p.settings, list(expected)) == expected
    present = next(u for u, profile in expected.items() if profile is not None)
    shown = subprocess.run(
        userstore("get", present), env=p.env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == expected[present]


@pytest.mark.timeout(180)
def test_an_eventbridge_rule_delivers_to_the_provisioned_queue(
    own_moto: str, tmp_path: Path
) -> None:
    """The rule and target of docs/serverless.md: the event pattern, the FIFO group id, no input
    transformation (the body is EventBridge's envelope, which the worker unwraps)."""
    p = provision_worker(own_moto)
    events_client = _client("events", p)
    rule = f"userstore-{p.settings.table}"
    events_client.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": [SOURCE],
                "detail-type": ["user.created", "user.updated", "user.deleted"],
            }
        ),
    )
    events_client.put_targets(
        Rule=rule,
        Targets=[
            {"Id": "userstore", "Arn": _queue_arn(p), "SqsParameters": {"MessageGroupId": "users"}}
        ],
    )
    events, _ = make_events(users=4, per_user=3, seed=31)
    for start in range(0, len(events), 10):
        entries = [
            {"Source": SOURCE, "DetailType": e["type"], "Detail": json.dumps(e)}
            for e in events[start : start + 10]
        ]
        answer = events_client.put_events(Entries=entries)
        assert answer["FailedEntryCount"] == 0
    # Accepted by EventBridge is not delivered: moto drops what the queue can't take, silently.
    delivered = queue_counts(p.sqs, p.url)[0]
    assert delivered == len(events), f"the rule's target dropped {len(events) - delivered} events"
    _worker_applies(p, events, tmp_path / "worker.log")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "notification"])
def test_an_sns_subscription_delivers_to_the_provisioned_queue(
    own_moto: str, tmp_path: Path, raw: bool
) -> None:
    """A FIFO topic (only those can feed a FIFO queue) with the queue subscribed: raw delivery
    puts the event itself on the queue; otherwise SNS's notification envelope carries it."""
    p = provision_worker(own_moto)
    sns = _client("sns", p)
    topic = sns.create_topic(
        Name=f"user-events-{p.settings.table}.fifo", Attributes={"FifoTopic": "true"}
    )["TopicArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=_queue_arn(p),
        Attributes={"RawMessageDelivery": "true" if raw else "false"},
    )
    events, _ = make_events(users=4, per_user=3, seed=37)
    for event in events:
        sns.publish(
            TopicArn=topic,
            Message=json.dumps(event),
            MessageGroupId=event["user_id"],
            MessageDeduplicationId=event["event_id"],
        )
    assert queue_counts(p.sqs, p.url)[0] == len(events), "not every event reached the queue"
    body = p.sqs.receive_message(QueueUrl=p.url, VisibilityTimeout=0)["Messages"][0]["Body"]
    assert ('"TopicArn"' in body) is not raw  # what the worker is given, as configured
    _worker_applies(p, events, tmp_path / "worker.log")


def _documented_blocks() -> str:
    """The shell blocks of docs/serverless.md's EventBridge section, in order, as one script."""
    text = (ROOT / "docs" / "serverless.md").read_text()
    section = text.split("### Routing events from EventBridge", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 3, "the rule and target, the policy grant, an event"
    # AWS CLI v1 does not read AWS_ENDPOINT_URL: pointed at the emulator here, as a user would.
    at_emulator = 'aws() { command aws --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }\n'
    return "set -euo pipefail\n" + at_emulator + "\n".join(blocks)


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    not (shutil.which("aws") and shutil.which("jq")), reason="needs the AWS CLI and jq"
)
def test_the_documented_eventbridge_setup_as_written(own_moto: str, tmp_path: Path) -> None:
    """docs/serverless.md's commands, pasted: the rule, its target, the grant, an event; the
    worker applies it, and the next `provision` keeps the grant."""
    p = provision_worker(own_moto)
    shell = p.env | {"AWS_DEFAULT_REGION": p.settings.aws_region}
    done = subprocess.run(
        ["bash", "-c", _documented_blocks()],
        env=shell,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert queue_counts(p.sqs, p.url)[0] == 1, "the documented event did not reach the queue"
    with background(userstore("run"), p.env, tmp_path / "worker.log") as worker:
        wait_drained(p.sqs, p.url)
        stop(worker, 30, tmp_path / "worker.log")
    shown = run_cli(p.env, "get", "u-eb-1")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["email"] == "eb@example.org"
    again = run_cli(p.env, "provision")
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    policy = p.sqs.get_queue_attributes(QueueUrl=p.url, AttributeNames=["Policy"])
    sids = [s["Sid"] for s in json.loads(policy["Attributes"]["Policy"])["Statement"]]
    assert sids == ["DenyInsecureTransport", "EventBridgeMaySend"]
