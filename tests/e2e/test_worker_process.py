"""End to end: the real `userstore` process against an emulator process (moto or ministack).

Events are published with plain boto3, the way another service would. Afterwards the decrypted
state must equal the reference model, raw items and logs must hold no personal value, and the
dead-letter queue must hold exactly the malformed messages.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import make_settings
from tests.factories import event_dict
from tests.model import expected_profiles
from userstore.worker.settings import Settings

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)


def userstore(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("userstore")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "userstore.worker", *args]


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERSTORE_")}
    env.update(
        AWS_ENDPOINT_URL=str(settings.aws_endpoint_url),
        AWS_REGION=settings.aws_region,
        USERSTORE_TABLE=settings.table,
        USERSTORE_META_TABLE=settings.meta_table,
        USERSTORE_STATE_TABLE=settings.state_table,
        USERSTORE_QUEUE=settings.queue,
        USERSTORE_DLQ=settings.dlq,
        USERSTORE_KMS_KEY=settings.kms_key,
        USERSTORE_KEY_MODE=str(settings.key_mode),
        USERSTORE_WAIT_TIME_S="1",
        USERSTORE_VISIBILITY_TIMEOUT_S="30",
        USERSTORE_MAX_IN_FLIGHT="16",
        USERSTORE_DRAIN_TIMEOUT_S="20",
    )
    return env


def make_traffic(seed: int, users: int) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Valid events (with duplicates), malformed bodies, and every personal value used."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    personal: list[str] = []
    for n in range(users):
        user = f"urn:fdc:gov.uk:2022:e2e-{uuid.uuid4().hex[:10]}"
        given, family = f"Given{rng.randrange(10**6):06d}x", f"Family{rng.randrange(10**6):06d}x"
        email = f"person.{rng.randrange(10**8):08d}@example.org"
        street = f"{rng.randrange(1, 999)} Secret Lane {n}"
        personal += [given, family, email, street]
        t = 0
        events.append(
            _e(
                user,
                "user.created",
                t,
                {"given_name": given, "email": email, "address": {"street_address": street}},
            )
        )
        for _ in range(rng.randrange(0, 4)):
            t += 1
            phone = f"+4477009{rng.randrange(10**5):05d}"
            personal.append(phone)
            events.append(
                _e(
                    user,
                    "user.updated",
                    t,
                    {"phone_number": phone, "family_name": family, "email": None},
                )
            )
        if rng.random() < 0.25:
            t += 1
            events.append(_e(user, "user.deleted", t))
    duplicates = rng.sample(events, k=len(events) // 5)
    malformed = [
        "{not json " + personal[0],
        json.dumps(
            {
                "event_id": "bad-1",
                "type": "user.created",
                "user_id": "x",
                "occurred_at": NOW.isoformat(),
                "data": {"email": personal[2].replace("@", " at ")},
            }
        ),
        json.dumps(
            {
                "event_id": "bad-2",
                "type": "user.updated",
                "user_id": "x",
                "occurred_at": NOW.isoformat(),
                "data": {"shoe_size": personal[1]},
            }
        ),
        json.dumps(
            {
                "event_id": "bad-3",
                "type": "user.exploded",
                "user_id": "x",
                "occurred_at": NOW.isoformat(),
            }
        ),
        json.dumps(
            {
                "event_id": "bad-4",
                "type": "user.created",
                "user_id": "x",
                "occurred_at": (NOW - timedelta(days=400)).isoformat(),
                "data": {"given_name": personal[0]},
            }
        ),
    ]
    return events + duplicates, malformed, personal


_e = functools.partial(event_dict, base=NOW)


def publish_with_boto3(sqs: Any, url: str, messages: list[tuple[str, str, str]]) -> None:
    """(group, dedup id, body) triples, sent ten at a time."""
    for start in range(0, len(messages), 10):
        entries = [
            {"Id": str(i), "MessageBody": b, "MessageGroupId": g, "MessageDeduplicationId": d}
            for i, (g, d, b) in enumerate(messages[start : start + 10])
        ]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")


def wait_drained(sqs: Any, url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        if (
            attrs["ApproximateNumberOfMessages"] == "0"
            and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
        ):
            return
        time.sleep(0.3)
    raise AssertionError("queue did not drain")


def scan_all(ddb: Any, table: str) -> list[dict[str, Any]]:
    return [
        item
        for page in ddb.get_paginator("scan").paginate(TableName=table)
        for item in page["Items"]
    ]


@pytest.mark.timeout(300)
def test_worker_process_end_to_end(aws_endpoint: str, tmp_path: Path) -> None:
    settings = make_settings(aws_endpoint)
    env = env_for(settings)
    subprocess.run(userstore("provision"), env=env, check=True, capture_output=True, timeout=60)

    session = boto3.session.Session(region_name=settings.aws_region)
    sqs = session.client("sqs", endpoint_url=aws_endpoint)
    ddb = session.client("dynamodb", endpoint_url=aws_endpoint)
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=settings.dlq)["QueueUrl"]

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
    dead = []
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
    actual = _read_profiles(settings, list(expected))
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


def _read_profiles(settings: Settings, users: list[str]) -> dict[str, Any]:
    import asyncio

    from userstore.worker import profile
    from userstore.worker.app import components
    from userstore.worker.record import from_item

    async def read() -> dict[str, Any]:
        result: dict[str, Any] = {}
        async with components(settings) as parts:
            for user in users:
                record = await parts.store.get(user)
                result[user] = (
                    None
                    if record is None
                    else profile.view(from_item(await parts.cipher.open(record.item)))
                )
        return result

    return asyncio.run(read())
