"""`userstore provision` run again on resources that changed: a human summary on stdout, exit 0
when everything could be brought in line, exit 8 with the resource, attribute, expected and
found value when something can't; never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3

from tests.harness.emulator import HOOKS_DIR, RESOURCES_FILE
from tests.harness.settings import make_settings
from tests.harness.worker_process import env_for, run_cli
from userstore.worker.provision_report import EXIT_DIFFERS


def test_provision_again_after_a_queue_attribute_changed(aws_endpoint: str) -> None:
    """The issue's case: deduplication turned on by hand used to break the next provision."""
    settings = make_settings(aws_endpoint)
    env = env_for(settings)
    first = run_cli(env, "provision")
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"created  queue {settings.queue}" in first.stdout.splitlines()
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint, region_name=settings.aws_region)
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    sqs.set_queue_attributes(
        QueueUrl=url, Attributes={"ContentBasedDeduplication": "false", "VisibilityTimeout": "9"}
    )

    again = run_cli(env, "provision")

    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    lines = again.stdout.splitlines()
    # (moto also clears a queue's policy on any set_queue_attributes without one: put back too)
    updated = f"updated  queue {settings.queue}: ContentBasedDeduplication, VisibilityTimeout"
    assert any(line.startswith(updated) for line in lines), lines
    assert f"as is    table {settings.table}" in lines
    assert lines[-1].endswith(": as configured")
    assert "Traceback" not in again.stderr
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ContentBasedDeduplication"] == "true"


def test_provision_reports_what_it_cant_change(aws_endpoint: str) -> None:
    settings = make_settings(aws_endpoint)
    env = env_for(settings)
    assert run_cli(env, "provision").returncode == 0
    kms = boto3.client("kms", endpoint_url=aws_endpoint, region_name=settings.aws_region)
    kms.disable_key(KeyId=kms.describe_key(KeyId=settings.kms_key)["KeyMetadata"]["KeyId"])

    again = run_cli(env, "provision")

    assert again.returncode == EXIT_DIFFERS, again.stdout + again.stderr[-2000:]
    lines = again.stdout.splitlines()
    differs = [line for line in lines if line.startswith("differs")]
    assert differs == [
        f"differs  key {settings.kms_key}: KeyState: expected Enabled, found Disabled (enable the"
        " key (aws kms enable-key), or point the alias at an enabled key)"
    ]
    assert lines[-1].endswith(f"see above (exit {EXIT_DIFFERS})")
    assert "Traceback" not in again.stderr


def test_the_localstack_hook_brings_a_queue_from_before_in_line(aws_endpoint: str) -> None:
    """The ready.d hook, run again on a queue made before content-based deduplication (and with
    an operator's grant in its policy), turns deduplication on and keeps the grant."""
    settings = make_settings(aws_endpoint)
    env = env_for(settings)
    assert run_cli(env, "provision").returncode == 0
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint, region_name=settings.aws_region)
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    policy["Statement"].append({"Sid": "Grant", "Effect": "Allow", "Action": "sqs:SendMessage"})
    sqs.set_queue_attributes(
        QueueUrl=url,
        Attributes={"ContentBasedDeduplication": "false", "Policy": json.dumps(policy)},
    )
    for hook in sorted(HOOKS_DIR.glob("*.py")):
        done = subprocess.run(
            [sys.executable, str(hook)],
            env=env | {"USERSTORE_RESOURCES_FILE": str(RESOURCES_FILE)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ContentBasedDeduplication"] == "true"
    sids = [s["Sid"] for s in json.loads(attributes["Policy"])["Statement"]]
    assert sids == ["DenyInsecureTransport", "Grant"]
