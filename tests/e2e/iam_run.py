"""Runs the worker (and a publisher) behind the recording proxy; returns what they called.

Shared by tests/e2e/test_iam_policies.py. Provisioning and rotation are an administrator's
actions and go straight to the emulator; only the worker's and the publisher's calls pass
through the proxy.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.conftest import make_settings
from tests.e2e.test_worker_process import NOW, env_for, userstore, wait_drained
from tests.factories import event_dict
from tests.faults.proxy import FaultRules, ProxyStats, ServiceRules, fault_proxy_process
from worker.settings import KeyMode, Settings

Calls = dict[tuple[str, str], list[frozenset[str]]]


def calls_of(stats: ProxyStats) -> Calls:
    """(service, operation) -> what each distinct request named."""
    found: Calls = {}
    for service, entry in stats.data["services"].items():
        for operation in entry.get("operations", {}):
            found[(service, operation)] = stats.requests(service, operation)
    return found


def _wait_log(path: Path, event: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f'"event": "{event}"' in path.read_text():
            return
        time.sleep(0.3)
    raise AssertionError(f"no {event} in the worker's log")


def _events(users: int, base: Any) -> list[dict[str, Any]]:
    events = []
    for n in range(users):
        user = f"urn:fdc:gov.uk:2022:iam-{uuid.uuid4().hex[:10]}"
        events.append(
            event_dict(user, "user.created", 0, {"email": f"u{n}@example.org"}, base=base)
        )
        events.append(event_dict(user, "user.updated", 1, {"given_name": f"G{n}"}, base=base))
    return events


def placeholders(settings: Settings, key_id: str, previous_key_id: str) -> dict[str, str]:
    """Values for the policies' ${...} placeholders (moto's account is 123456789012)."""
    return {
        "Region": settings.aws_region,
        "Account": "123456789012",
        "Table": settings.table,
        "MetaTable": settings.meta_table,
        "StateTable": settings.state_table,
        "Queue": settings.queue,
        "DeadLetterQueue": settings.dlq,
        "KeyId": key_id,
        "PreviousKeyId": previous_key_id,
        "PayloadKeyAlias": "alias/userstore-payload-not-in-use",
    }


def worker_calls(moto_endpoint: str, tmp_path: Path, mode: KeyMode) -> tuple[Calls, dict[str, str]]:
    """A worker's run: events applied, a malformed one dead-lettered, a KMS refusal retried
    later (kms mode), a rotation followed and its re-encryption job run.
    """
    settings = make_settings(moto_endpoint, mode)
    env = {**env_for(settings), "USERSTORE_CONTROL_POLL_S": "1"}
    subprocess.run(userstore("provision"), env=env, check=True, capture_output=True, timeout=60)
    session = boto3.session.Session(region_name=settings.aws_region)
    sqs = session.client("sqs", endpoint_url=moto_endpoint)
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    kms = session.client("kms", endpoint_url=moto_endpoint)
    first_key = kms.describe_key(KeyId=settings.kms_key)["KeyMetadata"]["KeyId"]

    def send(bodies: list[tuple[str, str]]) -> None:
        for group, body in bodies:
            sqs.send_message(
                QueueUrl=url,
                MessageBody=body,
                MessageGroupId=group,
                MessageDeduplicationId=uuid.uuid4().hex,
            )

    log_path = tmp_path / f"worker-{mode}.log"
    with fault_proxy_process(moto_endpoint) as (proxy_url, control), log_path.open("w") as log:
        worker = subprocess.Popen(
            userstore("run"),
            env={**env, "AWS_ENDPOINT_URL": proxy_url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            events = _events(4, NOW)
            send([(e["user_id"], json.dumps(e)) for e in events] + [("bad", "{not json")])
            wait_drained(sqs, url)
            if mode is KeyMode.KMS:
                to = kms.create_key(Description="iam test rotation")["KeyMetadata"]["Arn"]
                key_id = to.rsplit("/", 1)[1]
            else:
                to, key_id = "new", first_key
            subprocess.run(
                userstore("rotate", "--to", to), env=env, check=True, capture_output=True,
                timeout=60,
            )  # fmt: skip
            _wait_log(log_path, "rotation.job_done")
            if mode is KeyMode.KMS:
                # The next record write meets a KMS refusal: the message is retried later.
                control.set_rules(
                    FaultRules(
                        services={
                            "kms": ServiceRules(
                                outage="kms_access_denied",
                                operations=frozenset({"GenerateDataKey"}),
                                max_faults=1,
                            )
                        }
                    )
                )
            later = [event_dict(e["user_id"], "user.updated", 5, {"family_name": "L"}, base=NOW)
                     for e in events[::2]]  # fmt: skip
            send([(e["user_id"], json.dumps(e)) for e in later])
            wait_drained(sqs, url)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, log_path.read_text()[-2000:]
        return calls_of(control.stats()), placeholders(settings, key_id, first_key)


def publisher_calls(moto_endpoint: str, tmp_path: Path) -> tuple[Calls, dict[str, str]]:
    """`userstore publish`: the events package's Publisher, as another service would use it."""
    settings = make_settings(moto_endpoint)
    env = env_for(settings)
    subprocess.run(userstore("provision"), env=env, check=True, capture_output=True, timeout=60)
    lines = tmp_path / "events.jsonl"
    lines.write_text("\n".join(json.dumps(e) for e in _events(6, NOW)) + "\n")
    with fault_proxy_process(moto_endpoint) as (proxy_url, control):
        subprocess.run(
            userstore("publish", str(lines)),
            env={**env, "AWS_ENDPOINT_URL": proxy_url},
            check=True,
            capture_output=True,
            timeout=60,
        )
        return calls_of(control.stats()), placeholders(settings, "none", "none")
