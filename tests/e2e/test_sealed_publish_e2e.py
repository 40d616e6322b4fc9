"""End to end: `userstore publish --seal`, then `userstore run` applies what only it can read."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.harness.external import run_prefix
from tests.harness.logs import log_records
from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles
from tests.harness.traffic import make_events, write_jsonl
from tests.harness.waiting import wait_drained, wait_until
from tests.harness.worker_process import background, clients, provisioned, run_cli, stop, userstore


@pytest.mark.timeout(180)
def test_sealed_publish_is_applied_and_the_queue_never_holds_plaintext(
    aws_endpoint: str, tmp_path: Path
) -> None:
    payload_key = f"alias/{run_prefix()}payload-{uuid.uuid4().hex[:8]}"
    settings, env = provisioned(aws_endpoint, {"USERSTORE_PAYLOAD_KMS_KEY": payload_key})
    settings = settings.model_copy(update={"payload_kms_key": payload_key})
    sqs, _, url, dlq = clients(settings)
    events, personal = make_events(users=4, per_user=3, seed=7)
    source = write_jsonl(tmp_path / "events.jsonl", [json.dumps(e) for e in events])

    done = run_cli(env, "publish", "--seal", str(source))
    assert done.returncode == 0, done.stderr
    assert "sent 12 events" in done.stdout

    peeked = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    bodies = [m["Body"] for m in peeked["Messages"]]
    assert bodies
    for text in bodies:
        envelope = json.loads(text)
        assert "sealed" in envelope and "data" not in envelope
        assert not [value for value in personal if value in text]

    log = tmp_path / "worker.log"
    with background(userstore("run"), env, log) as proc:
        wait_drained(sqs, url)
        wait_until(
            lambda: sum(1 for r in log_records(log) if r.get("event") == "message.handled") >= 12,
            60,
            "every event to be handled",
            proc,
            log,
        )
        stop(proc, 30, log)
    assert "Messages" not in sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)
    expected = expected_profiles(events)
    assert read_profiles(settings, list(expected)) == expected
    text = log.read_text()
    assert not [value for value in personal if value in text]
