"""Crash: SIGKILL the worker mid-batch while events flow, restart it, several times.

Each kill is aimed: the worker serves /metrics, and it is killed once it has handled a random
number of messages (so it is past start-up and working) and at the same scrape reports messages
received and not yet settled (`userstore_in_flight`). The test asserts every kill was sent
straight after such a scrape, so each one landed on work in flight, not on an idle or starting
worker. At the end the stored state equals the reference model: no event lost, none applied
twice with a different effect, nothing dead-lettered.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness.emulator import free_port
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
# A worker is killed after handling between 1 and this many messages (drawn per kill).
MAX_HANDLED_BEFORE_KILL = 10


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


def scrape(port: int) -> tuple[float, float] | None:
    """(messages handled, messages in flight) from the worker's /metrics; None if not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            page = response.read().decode()
    except OSError:
        return None
    handled = sum(
        float(v) for v in re.findall(r"^userstore_events_total\{[^}]*\} (\S+)$", page, re.M)
    )
    in_flight = re.search(r"^userstore_in_flight (\S+)$", page, re.M)
    return handled, float(in_flight.group(1)) if in_flight else 0.0


def kill_mid_batch(worker: subprocess.Popen[bytes], port: int, handled_at_least: int) -> float:
    """SIGKILL `worker` right after a scrape shows it has handled `handled_at_least` messages and
    holds some in flight; returns how many it held. Fails if that moment does not come."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited before it was killed"
        seen = scrape(port)
        if seen is not None and seen[0] >= handled_at_least and seen[1] >= 1:
            worker.send_signal(signal.SIGKILL)
            return seen[1]
        time.sleep(0.01)
    raise AssertionError("the worker never had messages in flight to be killed during")


@pytest.mark.timeout(600)
def test_sigkill_mid_batch_loses_nothing(
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
        "Crash: SIGKILL mid-batch",
        load=f"{len(events)} events for {USERS} users, FIFO, trickled in",
        faults=f"worker SIGKILLed {KILLS} times mid-batch (each straight after its /metrics showed"
        " messages received and not settled, after 1 to 10 handled), restarted each time",
        checked="every kill sent while the worker held messages in flight; decrypted state ="
        " model; nothing dead-lettered; no personal value in raw items or logs",
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
    held_at_kill: list[float] = []
    with logs.open("w") as out:
        while len(held_at_kill) < KILLS:
            port = free_port()
            worker = subprocess.Popen(
                userstore("run"),
                env=env | {"USERSTORE_METRICS_PORT": str(port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                target = rng.randint(1, MAX_HANDLED_BEFORE_KILL)
                held_at_kill.append(kill_mid_batch(worker, port, target))
            finally:
                worker.kill()  # already dead unless the kill was never aimed
                worker.wait(timeout=10)
        sender.join()
        worker = subprocess.Popen(userstore("run"), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_drained(sqs, url, timeout_s=300)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
    output = logs.read_text()
    assert code == 0, output[-2000:]
    # Every kill landed while the worker held messages it had received and not settled.
    assert len(held_at_kill) == KILLS and min(held_at_kill) >= 1, held_at_kill
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
