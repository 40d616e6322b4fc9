"""End to end: `userstore dlq list` and `userstore dlq redrive` as an operator runs them.

A worker process configured too strictly (a one-hour tombstone horizon) dead-letters events
dated two hours ago; malformed bodies carrying personal values are dead-lettered too. `dlq list`
shows each dead letter's ids, classes and reason, never a body or a personal value, and deletes
nothing. After the fix (the default horizon), `dlq redrive --error EventOutOfRange` sends those
events back, the worker applies them, and each keeps the trace id it had.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness.factories import event_dict
from tests.harness.traffic import NOW, publish_with_boto3
from tests.harness.waiting import wait_drained
from tests.harness.worker_process import provision_worker, userstore

TIMEOUT_S = 60


@contextmanager
def worker(env: dict[str, str], log_path: Path) -> Iterator[None]:
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            userstore("run"), env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log_path.read_text()[-2000:]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        userstore(*args), env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    return done


def dlq_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.mark.timeout(300)
def test_list_shows_no_personal_data_and_redrive_brings_events_back(
    aws_endpoint: str, tmp_path: Path
) -> None:
    _, env, sqs, _, url, dlq = provision_worker(aws_endpoint)

    base = NOW - timedelta(hours=2)
    personal: list[str] = []
    late = []
    for n in range(3):
        user = f"urn:fdc:gov.uk:2022:dlq-{uuid.uuid4().hex[:10]}"
        name = f"Given{uuid.uuid4().hex[:8]}"
        personal += [user, name]
        late.append(event_dict(user, "user.created", n, {"given_name": name}, base=base))
    late[0]["trace_id"] = "publisher-trace-1"
    secret_email = f"p.{uuid.uuid4().hex[:8]}@example.org"
    personal.append(secret_email)
    malformed = [
        "{not json " + secret_email,
        json.dumps({"event_id": "bad-1", "type": "user.created", "user_id": "x",
                    "occurred_at": NOW.isoformat(), "data": {"email": secret_email[:-4]}}),
    ]  # fmt: skip
    messages = [(e["user_id"], uuid.uuid4().hex, json.dumps(e)) for e in late]
    messages += [(f"bad-{i}", uuid.uuid4().hex, text) for i, text in enumerate(malformed)]

    strict = {**env, "USERSTORE_TOMBSTONE_TTL_S": "3600"}
    with worker(strict, tmp_path / "strict.log"):
        publish_with_boto3(sqs, url, messages)
        wait_drained(sqs, url)
    assert dlq_depth(sqs, dlq) == 5

    # list: ids, classes, reasons; never a body or a personal value; nothing deleted.
    table = run(env, "dlq", "list").stdout
    listed = [json.loads(line) for line in run(env, "dlq", "list", "--json").stdout.splitlines()]
    for secret in personal:
        assert secret not in table and secret not in json.dumps(listed)
    assert table.splitlines()[0] == "5 listed, about 5 in the queue"
    assert {d["error"] for d in listed} == {"EventOutOfRange", "InvalidMessage"}
    out_of_range = {d["event_id"]: d for d in listed if d["error"] == "EventOutOfRange"}
    assert set(out_of_range) == {e["event_id"] for e in late}
    for dead in out_of_range.values():
        assert dead["event_type"] == "user.created"
        assert "tombstone horizon" in dead["reason"]
        assert dead["receive_count"] == 1
        assert dead["age_s"] >= 0
    assert out_of_range[late[0]["event_id"]]["trace_id"] == "publisher-trace-1"
    assert all(d["reason"] for d in listed)
    assert dlq_depth(sqs, dlq) == 5

    # A dry run moves nothing; --max bounds it.
    dry = run(env, "dlq", "redrive", "--dry-run", "--error", "EventOutOfRange", "--max", "2")
    assert dry.stdout.count("would move ") == 3  # two lines, then the summary
    assert "would move 2;" in dry.stdout
    assert dlq_depth(sqs, dlq) == 5

    # After the fix, redrive those events; the worker applies them with their trace ids.
    moved = run(env, "dlq", "redrive", "--error", "EventOutOfRange")
    assert "moved 3; left (other error classes) 2; failed 0" in moved.stdout
    for secret in personal:
        assert secret not in moved.stdout + moved.stderr
    assert dlq_depth(sqs, dlq) == 2
    fixed_log = tmp_path / "fixed.log"
    with worker(env, fixed_log):
        wait_drained(sqs, url)
    for event in late:
        shown = run(env, "get", event["user_id"])
        assert json.loads(shown.stdout)["given_name"] == event["data"]["given_name"]
    handled = {
        line["event_id"]: line["trace_id"]
        for line in map(json.loads, fixed_log.read_text().splitlines())
        if line.get("event") == "message.handled"
    }
    assert handled == {d["event_id"]: d["trace_id"] for d in out_of_range.values()}
    assert dlq_depth(sqs, dlq) == 2  # the malformed ones stay until someone decides
