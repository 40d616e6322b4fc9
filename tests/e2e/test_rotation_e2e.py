"""End to end: rotate keys while events flow; the worker processes catch up on their own.

Afterwards every record is sealed under the new key, decrypts to the reference model, no update
was lost, and no record was re-encrypted twice (its revision moved by exactly one for the
rotation when no event touched it meanwhile).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import boto3
import pytest

from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles, stored_records
from tests.harness.traffic import event_messages, publish_with_boto3, timed_event
from tests.harness.waiting import (
    dead_letter_reasons,
    queue_counts,
    wait_all_sealed_under,
    wait_drained,
)
from tests.harness.worker_process import provision_worker, userstore
from userstore.worker.settings import KeyMode


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("mode", "workers"),
    [(KeyMode.KMS, 2), (KeyMode.CACHED, 1)],
    ids=["kms-two-workers", "cached-one-worker"],
)
def test_rotation_while_events_flow(
    aws_endpoint: str, tmp_path: Path, mode: KeyMode, workers: int
) -> None:
    # 400 users in the suite (RELIABILITY_SCALE=2.5 for the 1000 of a soak run): enough for the
    # rotation to land while events flow, affordable on CI's two cores.
    users_count = int(400 * float(os.environ.get("RELIABILITY_SCALE", "1")))
    settings, env, sqs, ddb, url, dlq = provision_worker(
        aws_endpoint,
        {
            "USERSTORE_CONTROL_POLL_S": "1",
            "USERSTORE_REENCRYPT_RATE_PER_S": "2000",
            "USERSTORE_STREAM_LEASE_S": "6",
            "USERSTORE_MAX_IN_FLIGHT": "32",
        },
        key_mode=mode,
    )
    kms = boto3.session.Session(region_name=settings.aws_region).client(
        "kms", endpoint_url=aws_endpoint
    )

    rng = random.Random(5)
    users = [f"urn:fdc:gov.uk:2022:rot-{n:05d}-{uuid.uuid4().hex[:6]}" for n in range(users_count)]
    creates = [
        timed_event(u, "user.created", 0, {"email": f"p{n}@example.org", "attributes": {"v": 0}})
        for n, u in enumerate(users)
    ]
    touched = rng.sample(users, k=200)
    updates = [
        timed_event(u, "user.updated", 1 + k, {"attributes": {"v": k + 1}, "given_name": f"G{k}"})
        for k in range(3)
        for u in touched
    ]

    logs = [tmp_path / f"worker-{n}.log" for n in range(workers)]
    procs = []
    for path in logs:
        with path.open("w") as out:
            procs.append(
                subprocess.Popen(userstore("run"), env=env, stdout=out, stderr=subprocess.STDOUT)
            )
    try:
        publish_with_boto3(sqs, url, event_messages(creates))
        wait_drained(sqs, url, timeout_s=240)
        before = {
            u: int(item["rev"]["N"]) for u, item in stored_records(ddb, settings.table).items()
        }

        # Rotate while updates keep flowing.
        sender = threading.Thread(
            target=publish_with_boto3, args=(sqs, url, event_messages(updates))
        )
        sender.start()
        target = (
            kms.create_key(Description="rotated")["KeyMetadata"]["Arn"]
            if mode is KeyMode.KMS
            else "new"
        )
        rotated = subprocess.run(
            userstore("rotate", "--to", target),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rotated.returncode == 0, rotated.stderr
        new_ref = rotated.stdout.strip().removeprefix("active key: ")
        sender.join()
        wait_drained(sqs, url, timeout_s=240)
        wait_all_sealed_under(ddb, settings.table, new_ref, timeout_s=240)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in procs]
    output = "\n".join(path.read_text() for path in logs)
    assert codes == [0] * workers, output[-3000:]

    # Every message applied, none dead-lettered (a dead letter's reason names the event).
    assert queue_counts(sqs, dlq) == (0, 0, 0), dead_letter_reasons(sqs, dlq)
    expected = expected_profiles(creates + updates)
    stored = read_profiles(settings, users)
    lost = sorted(u for u in users if stored.get(u) != expected.get(u))
    assert not lost, f"{len(lost)} users differ from the model, first: {lost[:3]}"
    after = {u: int(item["rev"]["N"]) for u, item in stored_records(ddb, settings.table).items()}
    untouched = [u for u in users if u not in set(touched)]
    # One re-encryption per record, never two (by two workers, or by the stream and the job).
    assert {after[u] - before[u] for u in untouched} == {1}

    status = subprocess.run(
        userstore("rotation", "status"), env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0
    assert "old keys can be retired" in status.stdout
    for n in range(users_count):
        assert f"p{n}@example.org" not in output
