"""Crash: SIGKILL the worker at random moments while events flow, restart it, several times.

At the end the stored state equals the reference model: no event lost, none applied twice with a
different effect, nothing dead-lettered.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness.factories import event_dict
from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles, scan_all
from tests.harness.traffic import publish_with_boto3
from tests.harness.waiting import wait_drained
from tests.harness.worker_process import provision_worker, userstore
from tests.reliability.scenario import ScenarioRecorder

NOW = datetime.now(UTC).replace(microsecond=0)
# CI-sized by default; RELIABILITY_SCALE=10 makes it a soak run (several thousand events).
SCALE = float(os.environ.get("RELIABILITY_SCALE", "1"))
USERS = int(60 * SCALE)
KILLS = max(4, int(4 * SCALE))


def traffic(rng: random.Random) -> tuple[list[dict[str, Any]], list[str]]:
    events: list[dict[str, Any]] = []
    personal: list[str] = []
    for n in range(USERS):
        user = f"urn:fdc:gov.uk:2022:crash-{n:04d}-{uuid.uuid4().hex[:6]}"
        email = f"crash.{n}.{rng.randrange(10**6)}@example.org"
        personal.append(email)
        t = 0
        events.append(_event(user, "user.created", t, {"email": email, "attributes": {"n": 0}}))
        for k in range(rng.randrange(4, 12)):
            t += 1
            events.append(_event(user, "user.updated", t, {"attributes": {"n": k + 1}}))
        if rng.random() < 0.2:
            events.append(_event(user, "user.deleted", t + 1))
    return events, personal


_event = functools.partial(event_dict, base=NOW)


@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_loses_nothing(
    moto_endpoint: str, tmp_path: Path, scenario: ScenarioRecorder
) -> None:
    rng = random.Random(2026)
    # Killed workers leave messages in flight: they come back after the visibility timeout and
    # count as receives, so the redrive limit must outlast the kills.
    settings, env, sqs, ddb, url, dlq = provision_worker(
        moto_endpoint,
        {
            "USERSTORE_VISIBILITY_TIMEOUT_S": "4",
            "USERSTORE_MAX_RECEIVE_COUNT": "30",
            "USERSTORE_MAX_IN_FLIGHT": "32",
        },
    )

    events, personal = traffic(rng)
    scenario.describe(
        "Crash: SIGKILL at random moments",
        load=f"{len(events)} events for {USERS} users, FIFO, trickled in",
        faults=f"worker SIGKILLed {KILLS} times at random moments, restarted each time",
        checked="decrypted state = model; nothing dead-lettered; no personal value in raw items"
        " or logs",
    )
    messages = [(e["user_id"], uuid.uuid4().hex, json.dumps(e)) for e in events]
    # Trickle the events in while the worker is killed and restarted.
    sender = threading.Thread(
        target=lambda: [
            (publish_with_boto3(sqs, url, messages[i : i + 100]), time.sleep(0.5))
            for i in range(0, len(messages), 100)
        ]
    )
    sender.start()
    logs = tmp_path / "worker.log"
    kills = 0
    with logs.open("w") as out:
        while kills < KILLS:
            worker = subprocess.Popen(
                userstore("run"), env=env, stdout=out, stderr=subprocess.STDOUT
            )
            time.sleep(rng.uniform(1.5, 4.0))
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            kills += 1
        sender.join()
        worker = subprocess.Popen(userstore("run"), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_drained(sqs, url, timeout_s=300)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
    output = logs.read_text()
    assert code == 0, output[-2000:]
    handled = output.count('"message.handled"')
    assert handled >= len(events)  # at least once; the kills make some twice

    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert dead == []
    users = sorted({e["user_id"] for e in events})
    assert read_profiles(settings, users) == expected_profiles(events)
    raw = json.dumps(scan_all(ddb, settings.table), default=lambda b: b.decode("latin-1"))
    for value in personal:
        assert value not in raw
        assert value not in output
