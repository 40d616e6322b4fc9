"""Rotation under load with faults on: afterwards every record is under the new key and equals
the model."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import uuid
from pathlib import Path

import boto3
import pytest

from tests.faults.proxy import DROP_AFTER, DROP_BEFORE, THROTTLE, FaultRules, fault_proxy_process
from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles, stored_records
from tests.harness.traffic import event_messages, publish_with_boto3, timed_event
from tests.harness.waiting import wait_all_sealed_under, wait_drained
from tests.harness.worker_process import (
    provision_worker,
    start_worker,
    stop_worker,
    userstore,
)
from tests.reliability.scenario import ScenarioRecorder

SCALE = float(os.environ.get("RELIABILITY_SCALE", "1"))


@pytest.mark.timeout(600)
def test_rotation_under_load_with_faults(
    moto_endpoint: str, tmp_path: Path, scenario: ScenarioRecorder
) -> None:
    users_count = int(300 * SCALE)
    rates = {THROTTLE: 0.05, "error5xx": 0.02, DROP_BEFORE: 0.005, DROP_AFTER: 0.005}
    rng = random.Random(8)
    users = [f"urn:fdc:gov.uk:2022:rf-{n:05d}-{uuid.uuid4().hex[:6]}" for n in range(users_count)]
    creates = [
        timed_event(u, "user.created", 0, {"email": f"rf{n}@example.org"})
        for n, u in enumerate(users)
    ]
    touched = rng.sample(users, k=users_count // 3)
    updates = [
        timed_event(u, "user.updated", 1 + k, {"attributes": {"v": k}})
        for k in range(3)
        for u in touched
    ]
    scenario.describe(
        "Rotation under load, faults on",
        load=f"{len(creates) + len(updates)} events for {users_count} users; rotate mid-stream",
        faults="5% throttling, 2% 5xx, 1% dropped connections on every call",
        checked="every record under the new key; decrypted state = model; no update lost",
    )
    settings, env, sqs, ddb, url, _ = provision_worker(
        moto_endpoint,
        {"USERSTORE_CONTROL_POLL_S": "1", "USERSTORE_REENCRYPT_RATE_PER_S": "2000"},
    )
    kms = boto3.session.Session(region_name=settings.aws_region).client(
        "kms", endpoint_url=moto_endpoint
    )
    log = tmp_path / "worker.log"
    with fault_proxy_process(moto_endpoint, FaultRules.everywhere(rates, seed=21)) as (proxy, _):
        worker = start_worker(env | {"AWS_ENDPOINT_URL": proxy}, log)
        try:
            publish_with_boto3(sqs, url, event_messages(creates))
            wait_drained(sqs, url, timeout_s=300)
            sender = threading.Thread(
                target=publish_with_boto3, args=(sqs, url, event_messages(updates))
            )
            sender.start()
            new_key = kms.create_key(Description="rotated")["KeyMetadata"]["Arn"]
            rotated = subprocess.run(
                userstore("rotate", "--to", new_key),
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert rotated.returncode == 0, rotated.stderr
            sender.join()
            wait_drained(sqs, url, timeout_s=300)
            wait_all_sealed_under(ddb, settings.table, f"kms:{new_key}", timeout_s=300)
        finally:
            output = stop_worker(worker, log)
    assert len(stored_records(ddb, settings.table)) == users_count
    assert read_profiles(settings, users) == expected_profiles(creates + updates)
    for n in range(users_count):
        assert f"rf{n}@example.org" not in output
