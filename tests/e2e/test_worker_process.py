"""End to end: the real `userstore` process against an emulator process (moto or ministack).

Events are published with plain boto3, the way another service would. Afterwards the decrypted
state must equal the reference model, raw items and logs must hold no personal value, and the
dead-letter queue must hold exactly the malformed messages.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles, scan_all
from tests.harness.traffic import make_traffic, publish_with_boto3
from tests.harness.waiting import take_dead_letters, wait_drained
from tests.harness.worker_process import provision_worker, userstore


@pytest.mark.timeout(300)
def test_worker_process_end_to_end(aws_endpoint: str, tmp_path: Path) -> None:
    settings, env, sqs, ddb, url, dlq = provision_worker(aws_endpoint)

    events, malformed, personal = make_traffic(seed=11, users=40)
    messages = [(e["user_id"], uuid.uuid4().hex, json.dumps(e)) for e in events]
    messages += [("bad", uuid.uuid4().hex, text) for text in malformed]

    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            userstore("run"), env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            publish_with_boto3(sqs, url, messages)
            wait_drained(sqs, url)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
    logs = log_path.read_text()
    assert code == 0, logs[-2000:]

    # Dead letters: exactly the malformed bodies, untouched, each with a reason.
    dead = take_dead_letters(sqs, dlq)
    assert sorted(m["Body"] for m in dead) == sorted(malformed)
    reasons = [m["MessageAttributes"]["userstore.reason"]["StringValue"] for m in dead]

    # Raw items, reasons and logs: no personal value anywhere.
    raw = json.dumps(scan_all(ddb, settings.table), default=lambda b: b.decode("latin-1"))
    for value in personal:
        assert value not in raw
        assert value not in logs
        assert not any(value in reason for reason in reasons)

    # Decrypted state equals the reference model.
    expected = expected_profiles(events)
    actual = read_profiles(settings, list(expected))
    assert actual == expected

    # The operator command: a present user prints its profile; a deleted one exits non-zero.
    present = next(u for u, p in expected.items() if p is not None)
    shown = subprocess.run(
        userstore("get", present), env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and json.loads(shown.stdout) == expected[present]
    gone = next((u for u, p in expected.items() if p is None), None)
    if gone is not None:
        missing = subprocess.run(
            userstore("get", gone), env=env, capture_output=True, text=True, timeout=60
        )
        assert missing.returncode == 1 and missing.stderr.count("\n") == 1
