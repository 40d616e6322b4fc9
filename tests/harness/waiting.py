"""Waiting on the worker process: for a queue to drain, for a condition, for every record to be
sealed under one key."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.stored import stored_records
from userstore.worker.dead_letters import ERROR_ATTRIBUTE, EVENT_ID_ATTRIBUTE, REASON_ATTRIBUTE
from userstore.worker.queue_depth import Emptiness

_DEPTH = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")


def wait_drained(sqs: Any, url: str, timeout_s: float = 120) -> None:
    """Until every reading for a second says no message waiting and none in flight (one
    reading is not enough: see userstore.worker.queue_depth)."""
    deadline = time.monotonic() + timeout_s
    empty = Emptiness()
    while time.monotonic() < deadline:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(_DEPTH))["Attributes"]
        if empty.observe(sum(int(attrs[name]) for name in _DEPTH), time.monotonic()):
            return
        time.sleep(0.2)
    raise AssertionError("queue did not drain")


def queue_counts(sqs: Any, url: str) -> tuple[int, int, int]:
    """(visible, in flight, delayed)."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    visible, in_flight, delayed = (int(attrs.get(name, "0")) for name in names)
    return visible, in_flight, delayed


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before {what}:\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}:\n{tail}")
        time.sleep(0.2)


def wait_all_sealed_under(ddb: Any, table: str, key_ref: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        refs = {item["key_ref"]["S"] for item in stored_records(ddb, table).values()}
        if refs == {key_ref}:
            return
        time.sleep(1)
    raise AssertionError(f"records still under other keys: {refs - {key_ref}}")


def take_dead_letters(sqs: Any, dlq: str) -> list[dict[str, Any]]:
    """Every message in the dead-letter queue, with its attributes, removed from it."""
    dead: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages"):
        dead += batch
        sqs.delete_message_batch(
            QueueUrl=dlq,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    return dead


def dead_letter_reasons(sqs: Any, dlq: str) -> list[str]:
    """What the dead letters say (event id, error and reason: never personal data), for a
    failing assertion's message. Peeks without keeping them from anyone."""
    response = sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageAttributeNames=["All"]
    )
    reasons = []
    for message in response.get("Messages", []):
        attrs = message.get("MessageAttributes", {})
        said = [
            attrs.get(name, {}).get("StringValue", "-")
            for name in (EVENT_ID_ATTRIBUTE, ERROR_ATTRIBUTE, REASON_ATTRIBUTE)
        ]
        reasons.append(" ".join(said))
    return reasons
