"""The worker process behind the fault proxy: nothing lost, nothing half-written."""

from __future__ import annotations

import functools
import json
import os
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults.proxy import (
    DROP_AFTER,
    DROP_BEFORE,
    KMS_DISABLED,
    THROTTLE,
    FaultRules,
    fault_proxy_process,
)
from tests.harness.factories import event_dict
from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles, scan_all
from tests.harness.traffic import publish_with_boto3
from tests.harness.waiting import take_dead_letters, wait_drained
from tests.harness.worker_process import (
    provision_worker,
    start_worker,
    stop_worker,
)
from tests.reliability.scenario import ScenarioRecorder

NOW = datetime.now(UTC).replace(microsecond=0)
SCALE = float(os.environ.get("RELIABILITY_SCALE", "1"))
ERROR5XX = "error5xx"


def traffic(users: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    personal: list[str] = []
    for n in range(users):
        user = f"urn:fdc:gov.uk:2022:fault-{n:04d}-{uuid.uuid4().hex[:6]}"
        email = f"fault.{n}.{rng.randrange(10**6)}@example.org"
        personal.append(email)
        events.append(_event(user, "user.created", 0, {"email": email, "attributes": {"n": 0}}))
        for k in range(rng.randrange(1, 6)):
            events.append(_event(user, "user.updated", k + 1, {"attributes": {"n": k + 1}}))
    return events, personal


_event = functools.partial(event_dict, base=NOW)


@pytest.mark.timeout(600)
def test_throttling_5xx_and_dropped_connections_lose_nothing(
    moto_endpoint: str, tmp_path: Path, scenario: ScenarioRecorder
) -> None:
    rates = {THROTTLE: 0.05, ERROR5XX: 0.02, DROP_BEFORE: 0.005, DROP_AFTER: 0.005}
    events, personal = traffic(int(50 * SCALE), seed=3)
    scenario.describe(
        "AWS faults on every call",
        load=f"{len(events)} events for {int(50 * SCALE)} users, FIFO",
        faults="5% throttling, 2% 5xx, 1% dropped connections (half after the request reached"
        " the emulator) on every SQS, DynamoDB, Streams and KMS call",
        checked="every valid event applied (state = model), none dead-lettered, faults really"
        " injected on each service, no personal value in logs or raw items",
    )
    settings, env, sqs, ddb, url, dlq = provision_worker(moto_endpoint)
    log = tmp_path / "worker.log"
    with fault_proxy_process(moto_endpoint, FaultRules.everywhere(rates, seed=11)) as (
        proxy,
        control,
    ):
        worker = start_worker(env | {"AWS_ENDPOINT_URL": proxy}, log)
        try:
            publish_with_boto3(
                sqs, url, [(e["user_id"], e["event_id"], json.dumps(e)) for e in events]
            )
            wait_drained(sqs, url, timeout_s=300)
            # The stream sees few calls (~20 in a CI-sized run, at 8.5% each): keep the worker
            # polling it until one is faulted, so "each service" holds every run.
            deadline = time.monotonic() + 90
            while not control.stats().injected("dynamodbstreams") and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            output = stop_worker(worker, log)
        stats = control.stats()
    for service in ("sqs", "dynamodb", "dynamodbstreams", "kms"):
        assert stats.injected(service) > 0, (service, stats.calls(service))
    assert sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", []) == []
    users = sorted({e["user_id"] for e in events})
    assert read_profiles(settings, users) == expected_profiles(events)
    raw = json.dumps(scan_all(ddb, settings.table), default=lambda b: b.decode("latin-1"))
    for value in personal:
        assert value not in raw
        assert value not in output


@pytest.mark.timeout(300)
def test_a_kms_outage_delays_events_until_kms_returns(
    moto_endpoint: str, tmp_path: Path, scenario: ScenarioRecorder
) -> None:
    events, _ = traffic(20, seed=4)
    creates = [e for e in events if e["type"] == "user.created"]
    scenario.describe(
        "KMS outage, then recovery",
        load=f"{len(creates)} creates sent during an 8 s outage",
        faults="every KMS call refused (DisabledException) while the worker runs",
        checked="no record written during the outage (never half-written); nothing"
        " dead-lettered; every event applied once KMS returned",
    )
    settings, env, sqs, ddb, url, dlq = provision_worker(moto_endpoint)
    log = tmp_path / "worker.log"
    with fault_proxy_process(moto_endpoint, FaultRules()) as (proxy, control):
        worker = start_worker(env | {"AWS_ENDPOINT_URL": proxy}, log)
        try:
            _wait_for(log, '"worker.started"')
            control.set_rules(FaultRules().with_outage("kms", KMS_DISABLED))
            publish_with_boto3(
                sqs, url, [(e["user_id"], e["event_id"], json.dumps(e)) for e in creates]
            )
            time.sleep(8)
            users = {e["user_id"] for e in creates}
            written = [i for i in scan_all(ddb, settings.table) if i["user_id"]["S"] in users]
            assert written == []  # nothing sealed, so nothing written
            assert control.stats().injected("kms", KMS_DISABLED) > 0
            control.set_rules(FaultRules())
            wait_drained(sqs, url, timeout_s=120)
        finally:
            output = stop_worker(worker, log)
    assert '"message.retry_later"' in output
    assert sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", []) == []
    assert read_profiles(settings, sorted(users)) == expected_profiles(creates)


@pytest.mark.timeout(300)
def test_a_long_kms_outage_dead_letters_with_the_reason(
    moto_endpoint: str, tmp_path: Path, scenario: ScenarioRecorder
) -> None:
    events, _ = traffic(5, seed=5)
    creates = [e for e in events if e["type"] == "user.created"]
    scenario.describe(
        "KMS outage past the redrive limit",
        load=f"{len(creates)} creates, USERSTORE_MAX_RECEIVE_COUNT=3",
        faults="every KMS call refused (DisabledException) for good",
        checked="each event dead-lettered on its last receive with a reason naming the KMS"
        " error and the attempts; no record written",
    )
    settings, env, sqs, ddb, url, dlq = provision_worker(
        moto_endpoint, max_receive_count=3, env={"USERSTORE_MAX_RECEIVE_COUNT": "3"}
    )
    log = tmp_path / "worker.log"
    with fault_proxy_process(moto_endpoint, FaultRules()) as (proxy, control):
        worker = start_worker(env | {"AWS_ENDPOINT_URL": proxy}, log)
        try:
            _wait_for(log, '"worker.started"')
            control.set_rules(FaultRules().with_outage("kms", KMS_DISABLED))
            publish_with_boto3(
                sqs, url, [(e["user_id"], e["event_id"], json.dumps(e)) for e in creates]
            )
            wait_drained(sqs, url, timeout_s=120)
        finally:
            stop_worker(worker, log)
    dead = take_dead_letters(sqs, dlq)
    assert sorted(m["Body"] for m in dead) == sorted(json.dumps(e) for e in creates)
    for message in dead:
        reason = message["MessageAttributes"]["userstore.reason"]["StringValue"]
        assert reason.startswith("gave up after 3 attempts")
        assert "DisabledException" in reason
    users = {e["user_id"] for e in creates}
    assert [i for i in scan_all(ddb, settings.table) if i["user_id"]["S"] in users] == []


def _wait_for(log: Path, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text} never logged"
        time.sleep(0.2)
