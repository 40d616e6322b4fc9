"""Concurrent workers: two worker processes on a standard queue, conflicting updates to the same
users, delivered in any order. No update is lost: the result equals the reference model."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness.factories import event_dict
from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles
from tests.harness.waiting import wait_drained
from tests.harness.worker_process import provision_worker, userstore
from tests.reliability.scenario import ScenarioRecorder

NOW = datetime.now(UTC).replace(microsecond=0)
SCALE = float(os.environ.get("RELIABILITY_SCALE", "1"))
USERS = int(30 * SCALE)


_event = functools.partial(event_dict, base=NOW)


def conflicting_traffic(rng: random.Random) -> list[dict[str, Any]]:
    events = []
    for n in range(USERS):
        user = f"urn:fdc:gov.uk:2022:conc-{n:04d}-{uuid.uuid4().hex[:6]}"
        events.append(_event(user, "user.created", 0, {"given_name": "A", "attributes": {}}))
        for k in range(12):
            # Every update touches the same fields as others: a lost update would show.
            patch = {
                "given_name": f"G{k}",
                "attributes": {f"a{k % 3}": k, f"k{k}": True},
            }
            if k % 5 == 4:
                patch["attributes"][f"a{(k + 1) % 3}"] = None
            events.append(_event(user, "user.updated", 1 + k + rng.random() / 2, patch))
    return events


@pytest.mark.timeout(600)
def test_two_workers_on_a_standard_queue_lose_no_update(
    moto_endpoint: str, tmp_path: Path, scenario: ScenarioRecorder
) -> None:
    rng = random.Random(99)
    settings, env, sqs, _, url, dlq = provision_worker(
        moto_endpoint,
        {"USERSTORE_MAX_IN_FLIGHT": "32", "USERSTORE_VISIBILITY_TIMEOUT_S": "10"},
        fifo=False,
    )

    events = conflicting_traffic(rng)
    scenario.describe(
        "Concurrent workers, conflicting updates",
        load=f"{len(events)} events for {USERS} users, shuffled, standard queue",
        faults="two worker processes racing on the same records",
        checked="decrypted state = model (no lost update); both workers worked; DLQ empty",
    )
    shuffled = events[:]
    rng.shuffle(shuffled)
    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    procs = []
    for path in logs:
        with path.open("w") as out:
            procs.append(
                subprocess.Popen(userstore("run"), env=env, stdout=out, stderr=subprocess.STDOUT)
            )
    try:
        for start in range(0, len(shuffled), 10):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(e)}
                for i, e in enumerate(shuffled[start : start + 10])
            ]
            assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
        wait_drained(sqs, url, timeout_s=300)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in procs]
    output = "\n".join(path.read_text() for path in logs)
    assert codes == [0, 0], output[-2000:]
    # both workers did part of the work
    assert all(path.read_text().count('"message.handled"') > 0 for path in logs)
    assert sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", []) == []
    users = sorted({e["user_id"] for e in events})
    assert read_profiles(settings, users) == expected_profiles(events)
