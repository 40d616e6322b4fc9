"""`userstore provision` run again on resources that changed: a human summary on stdout, exit 0
when everything could be brought in line, exit 6 with the resource, attribute, expected and
found value when something can't; never a traceback."""

from __future__ import annotations

import boto3

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
