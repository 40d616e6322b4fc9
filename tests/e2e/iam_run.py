"""Runs the worker (and a publisher) behind the recording proxy; returns what they called.

Shared by tests/e2e/test_iam_policies.py. Provisioning and rotation are an administrator's
actions and go straight to the emulator; only the worker's and the publisher's calls pass
through the proxy.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import boto3

from tests.faults.proxy import FaultRules, ProxyStats, ServiceRules, fault_proxy_process
from tests.harness.factories import event_dict
from tests.harness.settings import make_settings
from tests.harness.traffic import NOW
from tests.harness.waiting import wait_drained
from tests.harness.worker_process import env_for, userstore
from userstore.events import parse_event
from userstore.events.publisher import seal_body
from userstore.events.sealing import PayloadSealer
from userstore.worker.settings import KeyMode, Settings

Calls = dict[tuple[str, str], list[frozenset[str]]]


class Run(NamedTuple):
    calls: Calls
    names: dict[str, str]  # the policies' ${...} placeholders
    aliases: dict[str, str]  # alias name -> key ARN, at the end of the run (after any rotation)
    queue_keys: dict[str, str]  # queue ARN -> the KMS key ARN of its SSE-KMS (none: not listed)


def queue_keys_of(sqs: Any, *names: str) -> dict[str, str]:
    """The SSE-KMS key of each queue, as provisioned (an administrator's view)."""
    found = {}
    for name in names:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        names_ = ["QueueArn", "KmsMasterKeyId"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names_)["Attributes"]
        if attrs.get("KmsMasterKeyId"):
            found[attrs["QueueArn"]] = attrs["KmsMasterKeyId"]
    return found


def calls_of(stats: ProxyStats) -> Calls:
    """(service, operation) -> what each distinct request named."""
    found: Calls = {}
    for service, entry in stats.data["services"].items():
        for operation in entry.get("operations", {}):
            found[(service, operation)] = stats.requests(service, operation)
    return found


def _wait_log(path: Path, event: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f'"event": "{event}"' in path.read_text():
            return
        time.sleep(0.3)
    raise AssertionError(f"no {event} in the worker's log")


def _events(users: int, base: Any) -> list[dict[str, Any]]:
    events = []
    for n in range(users):
        user = f"urn:fdc:gov.uk:2022:iam-{uuid.uuid4().hex[:10]}"
        events.append(
            event_dict(user, "user.created", 0, {"email": f"u{n}@example.org"}, base=base)
        )
        events.append(event_dict(user, "user.updated", 1, {"given_name": f"G{n}"}, base=base))
    return events


def aliases_of(kms: Any) -> dict[str, str]:
    """Alias name -> key ARN (an administrator's view, not through the proxy)."""
    found = {}
    for page in kms.get_paginator("list_aliases").paginate():
        for alias in page["Aliases"]:
            if "TargetKeyId" in alias:
                found[alias["AliasName"]] = alias["AliasArn"].replace(
                    alias["AliasName"], "key/" + alias["TargetKeyId"]
                )
    return found


def _payload_settings(moto_endpoint: str, mode: KeyMode = KeyMode.KMS) -> Settings:
    """Settings with a payload key of their own (the default alias is shared by all tests)."""
    settings = make_settings(moto_endpoint, mode)
    alias = f"alias/userstore-payload-{settings.table.removeprefix('users-')}"
    return settings.model_copy(update={"payload_kms_key": alias})


def placeholders(settings: Settings, key_id: str, previous_key_id: str) -> dict[str, str]:
    """Values for the policies' ${...} placeholders (moto's account is 123456789012)."""
    return {
        "Region": settings.aws_region,
        "Account": "123456789012",
        "Table": settings.table,
        "MetaTable": settings.meta_table,
        "StateTable": settings.state_table,
        "Queue": settings.queue,
        "DeadLetterQueue": settings.dlq,
        "KeyId": key_id,
        "PreviousKeyId": previous_key_id,
        "PayloadKeyAlias": settings.payload_kms_key,
        "StorageKeyAlias": settings.storage_kms_key,
    }


def _seal(sealer: PayloadSealer, event: dict[str, Any]) -> str:
    return seal_body(sealer.seal(parse_event(json.dumps(event))))


def _bodies(
    events: list[dict[str, Any]], sealer: PayloadSealer, foreign: PayloadSealer
) -> list[tuple[str, str]]:
    """Every other event sealed, a malformed body, and two sealed events the worker must refuse:
    one moved to another event id, one sealed under a key that is not the worker's.
    """
    bodies = [
        (e["user_id"], _seal(sealer, e) if n % 2 else json.dumps(e)) for n, e in enumerate(events)
    ]
    user = f"urn:fdc:gov.uk:2022:iam-{uuid.uuid4().hex[:10]}"
    first = event_dict(user, "user.created", 0, {"email": "m@x.org"}, base=NOW)
    moved = {**json.loads(_seal(sealer, first)), "event_id": f"evt-{uuid.uuid4().hex}"}
    alien = _seal(foreign, event_dict(user, "user.created", 1, {"email": "f@x.org"}, base=NOW))
    return [*bodies, ("bad", "{not json"), (user, json.dumps(moved)), (user, alien)]


def _dead_letter_reasons(sqs: Any, url: str) -> list[str]:
    reasons = []
    while got := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        for message in got:
            reasons.append(message["MessageAttributes"]["userstore.reason"]["StringValue"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return reasons


def worker_calls(moto_endpoint: str, tmp_path: Path, mode: KeyMode) -> Run:
    """A worker's run: events applied, every other one sealed; a malformed body and two sealed
    ones it must not accept dead-lettered; a KMS refusal retried later (kms mode); a rotation
    followed and its re-encryption job run.
    """
    settings = _payload_settings(moto_endpoint, mode)
    env = {
        **env_for(settings),
        "USERSTORE_CONTROL_POLL_S": "1",
        "USERSTORE_PAYLOAD_KMS_KEY": settings.payload_kms_key,
    }
    subprocess.run(userstore("provision"), env=env, check=True, capture_output=True, timeout=60)
    session = boto3.session.Session(region_name=settings.aws_region)
    sqs = session.client("sqs", endpoint_url=moto_endpoint)
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=settings.dlq)["QueueUrl"]
    kms = session.client("kms", endpoint_url=moto_endpoint)
    first_key = kms.describe_key(KeyId=settings.kms_key)["KeyMetadata"]["KeyId"]
    # Publishers seal straight against the emulator: only the worker goes through the proxy.
    payload_arn = kms.describe_key(KeyId=settings.payload_kms_key)["KeyMetadata"]["Arn"]
    sealer = PayloadSealer(kms, payload_arn)
    other_key = kms.create_key(Description="not the payload key")["KeyMetadata"]["Arn"]
    foreign = PayloadSealer(kms, other_key)

    def send(bodies: list[tuple[str, str]]) -> None:
        for group, body in bodies:
            sqs.send_message(
                QueueUrl=url,
                MessageBody=body,
                MessageGroupId=group,
                MessageDeduplicationId=uuid.uuid4().hex,
            )

    log_path = tmp_path / f"worker-{mode}.log"
    with fault_proxy_process(moto_endpoint) as (proxy_url, control), log_path.open("w") as log:
        worker = subprocess.Popen(
            userstore("run"),
            env={**env, "AWS_ENDPOINT_URL": proxy_url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            events = _events(4, NOW)
            send(_bodies(events, sealer, foreign))
            wait_drained(sqs, url)
            reasons = _dead_letter_reasons(sqs, dlq_url)
            # The moved payload is refused by its context (after Decrypt), the foreign one by key.
            assert len(reasons) == 3, reasons
            assert [r for r in reasons if "context does not match" in r], reasons
            assert [r for r in reasons if r.startswith("sealed: cannot be opened")], reasons
            if mode is KeyMode.KMS:
                to = kms.create_key(Description="iam test rotation")["KeyMetadata"]["Arn"]
                key_id = to.rsplit("/", 1)[1]
            else:
                to, key_id = "new", first_key
            subprocess.run(
                userstore("rotate", "--to", to), env=env, check=True, capture_output=True,
                timeout=60,
            )  # fmt: skip
            _wait_log(log_path, "rotation.job_done")
            if mode is KeyMode.KMS:
                # Record writes meet a KMS refusal until one message has been put back for later
                # (ChangeMessageVisibility). Not "the next GenerateDataKey fails": the stream
                # reader, re-encrypting records it read before the rotation, may be the one to
                # take a single fault, and then no message would ever be retried.
                control.set_rules(
                    FaultRules(
                        services={
                            "kms": ServiceRules(
                                outage="kms_access_denied",
                                operations=frozenset({"GenerateDataKey"}),
                            )
                        }
                    )
                )
            later = [event_dict(e["user_id"], "user.updated", 5, {"family_name": "L"}, base=NOW)
                     for e in events[::2]]  # fmt: skip
            send([(e["user_id"], json.dumps(e)) for e in later])
            if mode is KeyMode.KMS:
                _wait_log(log_path, "message.retry_later")
                control.set_rules(FaultRules())
            wait_drained(sqs, url)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, log_path.read_text()[-2000:]
        names = placeholders(settings, key_id, first_key)
        queue_keys = queue_keys_of(sqs, settings.queue, settings.dlq)
        return Run(calls_of(control.stats()), names, aliases_of(kms), queue_keys)


def publisher_calls(moto_endpoint: str, tmp_path: Path) -> Run:
    """`userstore publish`, plain and `--seal`: the events package's Publisher (with a
    PayloadSealer), as another service would use it.
    """
    settings = _payload_settings(moto_endpoint)
    env = {**env_for(settings), "USERSTORE_PAYLOAD_KMS_KEY": settings.payload_kms_key}
    subprocess.run(userstore("provision"), env=env, check=True, capture_output=True, timeout=60)
    plain, sealed = tmp_path / "plain.jsonl", tmp_path / "sealed.jsonl"
    plain.write_text("\n".join(json.dumps(e) for e in _events(3, NOW)) + "\n")
    sealed.write_text("\n".join(json.dumps(e) for e in _events(3, NOW)) + "\n")
    with fault_proxy_process(moto_endpoint) as (proxy_url, control):
        for args in ((str(plain),), ("--seal", str(sealed))):
            subprocess.run(
                userstore("publish", *args),
                env={**env, "AWS_ENDPOINT_URL": proxy_url},
                check=True,
                capture_output=True,
                timeout=60,
            )
        session = boto3.session.Session(region_name=settings.aws_region)
        kms = session.client("kms", endpoint_url=moto_endpoint)
        sqs = session.client("sqs", endpoint_url=moto_endpoint)
        names = placeholders(settings, "none", "none")
        queue_keys = queue_keys_of(sqs, settings.queue)
        return Run(calls_of(control.stats()), names, aliases_of(kms), queue_keys)
