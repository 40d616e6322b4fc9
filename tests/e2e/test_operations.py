"""End to end: the worker process's /metrics, /healthz, /readyz, and its log correlation ids.

The real `userstore run` against the emulator (`aws_endpoint`: moto server or ministack), with
events published by plain boto3: valid events (some carrying a publisher trace id, one an X-Ray
header), malformed bodies, and an update for a record tampered with in DynamoDB. Then, over real
HTTP: the probes answer, the counters add up, KMS requests of the encryption SDK's own client
are counted, and no personal value or user id appears anywhere in /metrics. In the logs, every
line about one message carries the same message id, event id and trace id, the dead-letter path
included.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.faults.proxy import FaultRules, ServiceRules, fault_proxy_process
from tests.harness import forgery
from tests.harness.traffic import make_traffic, publish_with_boto3, timed_event
from tests.harness.waiting import wait_drained
from tests.harness.worker_process import provision_worker, userstore
from userstore.worker.profile import Presence

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate: Any, timeout_s: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def listening_port(log_path: Path) -> int | None:
    for line in log_path.read_text().splitlines():
        if '"probes.listening"' in line:
            return int(json.loads(line)["port"])
    return None


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text page."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        found.append((match.group(1), labels, float(match.group(3))))
    return found


def value(page: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v for n, ls, v in page if n == name and all(ls.get(k) == x for k, x in labels.items())
    )


def tamper(ddb: Any, table: str, user: str) -> None:
    """Edit a signed attribute of the stored record, the way someone with table write could
    (record format 2: the bookkeeping `h`, its presence flipped to deleted; format 2 has no
    plaintext stamp to push into the future)."""
    item = ddb.get_item(TableName=table, Key={"user_id": {"S": user}}, ConsistentRead=True)["Item"]
    ddb.put_item(TableName=table, Item=forgery.with_presence(item, Presence.DELETED))


@pytest.mark.timeout(300)
def test_metrics_probes_and_log_correlation(aws_endpoint: str, tmp_path: Path) -> None:
    settings, env, sqs, ddb, url, dlq = provision_worker(
        aws_endpoint, {"USERSTORE_METRICS_PORT": "0"}
    )

    events, malformed, personal = make_traffic(seed=5, users=12)
    traced = {}
    for event in events[::3]:
        event["trace_id"] = traced[event["event_id"]] = f"pub-{uuid.uuid4().hex}"
    victim = f"urn:fdc:gov.uk:2022:e2e-{uuid.uuid4().hex[:10]}"
    secret = f"Victim{uuid.uuid4().hex[:8]}"
    personal.append(secret)
    created = timed_event(victim, "user.created", 0, {"given_name": secret})
    messages = [(e["user_id"], uuid.uuid4().hex, json.dumps(e)) for e in [*events, created]]
    messages += [("bad", uuid.uuid4().hex, text) for text in malformed]
    users = {e["user_id"] for e in events} | {victim}

    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            userstore("run"), env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            port = wait_for(lambda: listening_port(log_path), what="the metrics port")
            base = f"http://127.0.0.1:{port}"
            assert http_get(f"{base}/healthz")[0] == 200
            wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, what="readiness")
            assert json.loads(http_get(f"{base}/readyz")[1]) == {"status": "ready"}

            publish_with_boto3(sqs, url, messages)
            wait_drained(sqs, url)
            tamper(ddb, settings.table, victim)
            update = timed_event(victim, "user.updated", 5, {"family_name": "Later"})
            xray_root = f"1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"
            sqs.send_message(
                QueueUrl=url,
                MessageBody=json.dumps(update),
                MessageGroupId=victim,
                MessageDeduplicationId=uuid.uuid4().hex,
                MessageSystemAttributes={
                    "AWSTraceHeader": {
                        "DataType": "String",
                        "StringValue": f"Root={xray_root};Parent=53995c3f42cd8ad8;Sampled=1",
                    }
                },
            )
            wait_drained(sqs, url)
            status, text = http_get(f"{base}/metrics")
            assert status == 200
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
    logs = log_path.read_text()
    assert code == 0, logs[-2000:]

    # Counters add up to what was sent.
    page = samples(text)
    distinct = {e["event_id"] for e in events} | {created["event_id"], update["event_id"]}
    handled = value(page, "userstore_events_total")
    assert len(distinct) <= handled <= len(messages) + 1
    assert value(page, "userstore_events_total", outcome="dead_lettered") == 2  # tampered, old
    assert value(page, "userstore_events_total", outcome="failed") == 0
    assert value(page, "userstore_dead_letters_total", error="InvalidMessage") == 4
    assert value(page, "userstore_dead_letters_total", error="RecordTampered") == 1
    assert value(page, "userstore_verification_failures_total") == 1
    assert value(page, "userstore_handling_seconds_count") == handled
    assert value(page, "userstore_in_flight") == 0
    assert value(page, "userstore_aws_requests_total", service="sqs", operation="ReceiveMessage")
    assert value(page, "userstore_aws_requests_total", service="dynamodb", operation="PutItem")
    sdk_kms = value(
        page, "userstore_kms_requests_total", operation="GenerateDataKey", caller="encryption_sdk"
    )
    assert sdk_kms >= len(users)  # kms mode: a fresh data key per record write
    assert value(page, "userstore_kms_requests_total", caller="worker") >= 1  # index key
    assert any(n == "userstore_stream_lag_seconds" for n, _, _ in page)
    assert value(page, "userstore_build_info") == 1

    # No personal value, no user id, no event id: not in a label, not anywhere in the page.
    for secret_value in [*personal, *users, *distinct]:
        assert secret_value not in text
    label_values = {v for _, labels, _ in page for v in labels.values()}
    assert all(re.fullmatch(r"[A-Za-z0-9_.:+-]*", v) for v in label_values), label_values

    # Logs: every line about a message carries the same message, event and trace ids.
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    by_message: dict[str, set[tuple[Any, Any]]] = {}
    for line in lines:
        if "message_id" in line and line["event"] != "group.released":
            assert "trace_id" in line, line
            ids = (line.get("event_id"), line["trace_id"])
            by_message.setdefault(line["message_id"], set()).add(ids)
    assert all(len(ids) == 1 for ids in by_message.values()), by_message
    seen = {ids for group in by_message.values() for ids in group}
    for event_id, trace in traced.items():
        assert (event_id, trace) in seen
    assert (update["event_id"], xray_root) in seen
    tampered = [line for line in lines if line.get("event_id") == update["event_id"]]
    assert {line["event"] for line in tampered} >= {
        "security.record_verification_failed",
        "message.dead_lettered",
    }
    assert {line["trace_id"] for line in tampered} == {xray_root}

    # The dead letter carries the trace id too.
    dead = sqs.receive_message(
        QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
    )["Messages"]
    traces = {
        m["MessageAttributes"]["userstore.event_id"]["StringValue"]: m["MessageAttributes"][
            "userstore.trace_id"
        ]["StringValue"]
        for m in dead
        if "userstore.event_id" in m["MessageAttributes"]
    }
    assert traces[update["event_id"]] == xray_root


@pytest.mark.timeout(180)
def test_readiness_drops_while_draining_after_sigterm(aws_endpoint: str, tmp_path: Path) -> None:
    """A message is in flight behind slow DynamoDB calls when SIGTERM arrives: while the worker
    drains, /healthz still answers and /readyz says draining; then it exits 0.
    """
    _, env, sqs, _, url, _ = provision_worker(
        aws_endpoint, {"USERSTORE_METRICS_PORT": "0", "USERSTORE_STREAM_ENABLED": "false"}
    )
    log_path = tmp_path / "worker.log"
    with fault_proxy_process(aws_endpoint) as (proxy_url, control), log_path.open("w") as log:
        worker = subprocess.Popen(
            userstore("run"),
            env={**env, "AWS_ENDPOINT_URL": proxy_url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            port = wait_for(lambda: listening_port(log_path), what="the metrics port")
            base = f"http://127.0.0.1:{port}"
            wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, what="readiness")
            control.set_rules(FaultRules(services={"dynamodb": ServiceRules(latency_ms=3000)}))
            user = f"urn:fdc:gov.uk:2022:e2e-{uuid.uuid4().hex[:10]}"
            event = timed_event(user, "user.created", 0, {"given_name": "Drain"})
            publish_with_boto3(sqs, url, [(event["user_id"], uuid.uuid4().hex, json.dumps(event))])
            wait_for(
                lambda: value(samples(http_get(f"{base}/metrics")[1]), "userstore_in_flight") == 1,
                what="a message in flight",
            )
            worker.send_signal(signal.SIGTERM)
            assert wait_for(
                lambda: http_get(f"{base}/readyz") == (503, '{"status": "draining"}'),
                timeout_s=5,
                what="draining",
            )
            assert http_get(f"{base}/healthz")[0] == 200
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
    logs = log_path.read_text()
    assert code == 0, logs[-2000:]
    assert '"message.handled"' in logs  # the drain finished the message
