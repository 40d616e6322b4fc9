"""End to end, the retirement procedure of docs/keys.md: rotate, let the re-encryption job run,
see `rotation status` say the old key can be retired, disable it, restart, and every command
still works. On an emulator that enforces key state (moto through tests/harness/atomic_moto.py, and
ministack): the test first proves the disabled key is refused.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.harness.external import run_prefix
from tests.harness.factories import event_dict
from tests.harness.logs import count_logged, log_records
from tests.harness.settings import make_settings
from tests.harness.traffic import publish_with_boto3, write_jsonl
from tests.harness.waiting import wait_drained, wait_until
from tests.harness.worker_process import background, clients, env_for, run_cli, stop, userstore
from userstore.worker.settings import KeyMode, Settings


def _kms(settings: Settings) -> Any:
    return boto3.session.Session(region_name=settings.aws_region).client(
        "kms", endpoint_url=settings.aws_endpoint_url
    )


def _setup(endpoint: str, mode: KeyMode, **env: str) -> tuple[Settings, dict[str, str]]:
    settings = make_settings(endpoint, mode)
    payload_key = f"alias/{run_prefix()}payload-{uuid.uuid4().hex[:8]}"
    settings = settings.model_copy(update={"payload_kms_key": payload_key})
    full_env = {
        **env_for(settings),
        "USERSTORE_PAYLOAD_KMS_KEY": payload_key,
        "USERSTORE_CONTROL_POLL_S": "1",
        "USERSTORE_STREAM_POLL_IDLE_S": "0.5",
        **env,
    }
    done = run_cli(full_env, "provision")
    assert done.returncode == 0, done.stderr[-2000:]
    return settings, full_env


NOW = datetime.now(UTC).replace(microsecond=0)


def _events(users: list[str], step: int, kind: str = "user.created") -> list[dict[str, Any]]:
    """One event per user, `step` seconds after NOW; the email is made from the user id."""
    return [
        event_dict(
            user,
            kind,
            step,
            {"email": f"{user.rsplit('-', 1)[1]}@example.org", "given_name": f"G{step}"},
            base=NOW,
        )
        for user in users
    ]


def _publish(settings: Settings, events: list[dict[str, Any]]) -> None:
    sqs, _, url, _ = clients(settings)
    publish_with_boto3(sqs, url, [(e["user_id"], e["event_id"], json.dumps(e)) for e in events])


def _status(env: dict[str, str]) -> str:
    done = run_cli(env, "rotation", "status")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _wait_retirable(env: dict[str, str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = _status(env)
        if "old keys can be retired" in text:
            return text
        time.sleep(1)
    raise AssertionError(f"status never said the old key can be retired:\n{text}")


def _disable(kms: Any, arn: str, proof: bytes) -> None:
    """Disable the key, then prove the emulator refuses it (else the test would prove nothing)."""
    kms.disable_key(KeyId=arn.rpartition("/")[2])
    with pytest.raises(ClientError) as refused:
        kms.decrypt(CiphertextBlob=proof)
    assert refused.value.response["Error"]["Code"] in (
        "DisabledException",
        "KMSInvalidStateException",
    )


def _handled(log: Path) -> int:
    return count_logged(log, "message.handled")


def _run_until_handled(env: dict[str, str], log: Path, settings: Settings, at_least: int) -> None:
    sqs, _, url, _ = clients(settings)
    with background(userstore("run"), env, log) as proc:
        wait_drained(sqs, url)
        wait_until(lambda: _handled(log) >= at_least, 60, "events handled", proc, log)
        stop(proc, 30, log)


def _assert_every_command_works(
    env: dict[str, str], settings: Settings, users: list[str], tmp_path: Path
) -> None:
    user = users[0]
    got = run_cli(env, "get", user)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["given_name"] == "G2"
    email = f"{user.rsplit('-', 1)[1]}@example.org"
    found = run_cli(env, "find", "--email", email)
    assert (found.returncode, found.stdout.split()) == (0, [user]), found.stderr
    assert "old keys can be retired" in _status(env)
    verified = run_cli(env, "sweep", "--verify")
    assert verified.returncode == 0, verified.stderr[-2000:] + verified.stdout
    # a dead letter (an invalid event) goes back to the queue and is dead-lettered again
    sqs, _, url, dlq = clients(settings)
    bad = {"event_id": "bad-1", "type": "user.created", "user_id": "x", "occurred_at": "nope"}
    sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(bad),
        MessageGroupId="x",
        MessageDeduplicationId=uuid.uuid4().hex,
    )
    log = tmp_path / "dlq-worker.log"
    with background(userstore("run"), env, log) as proc:
        wait_until(
            lambda: count_logged(log, "message.dead_lettered") >= 1, 60, "a dead letter", proc, log
        )
        stop(proc, 30, log)
    redriven = run_cli(env, "dlq", "redrive")
    assert redriven.returncode == 0, redriven.stderr
    assert "moved bad-1" in redriven.stdout
    assert "Messages" not in sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("mode", [KeyMode.KMS, KeyMode.CACHED], ids=["kms", "cached"])
def test_the_old_key_is_retired_and_every_command_still_works(
    aws_endpoint: str, tmp_path: Path, mode: KeyMode
) -> None:
    settings, env = _setup(aws_endpoint, mode)
    kms = _kms(settings)
    old_arn = kms.describe_key(KeyId=settings.kms_key)["KeyMetadata"]["Arn"]
    proof = kms.encrypt(KeyId=old_arn, Plaintext=b"proof")["CiphertextBlob"]
    users = [f"urn:fdc:gov.uk:2022:ret-{uuid.uuid4().hex[:10]}" for _ in range(5)]
    _publish(settings, _events(users, 0))

    log = tmp_path / "worker.log"
    sqs, _, url, _ = clients(settings)
    with background(userstore("run"), env, log) as proc:
        wait_drained(sqs, url)
        wait_until(lambda: _handled(log) >= 5, 60, "the creates", proc, log)
        new_arn = kms.create_key(Description="userstore next")["KeyMetadata"]["Arn"]
        rotated = run_cli(env, "rotate", "--to", new_arn)
        assert rotated.returncode == 0, rotated.stderr[-2000:]
        _publish(settings, _events(users, 1, "user.updated"))  # events flow meanwhile
        text = _wait_retirable(env)  # the running worker's re-encryption job moves everything
        stop(proc, 30, log)
    assert f"old key kms:{old_arn}: nothing userstore holds needs it" in text

    _disable(kms, old_arn, proof)
    _publish(settings, _events(users, 2, "user.updated"))
    restarted = tmp_path / "restarted.log"
    _run_until_handled(env, restarted, settings, at_least=5)
    records = log_records(restarted)
    assert not [r for r in records if r.get("level") in ("error", "critical")], records[-5:]
    _assert_every_command_works(env, settings, users, tmp_path)


@pytest.mark.timeout(420)
def test_the_old_payload_key_is_retired_after_its_sealed_messages_are_applied(
    aws_endpoint: str, tmp_path: Path
) -> None:
    settings, env = _setup(aws_endpoint, KeyMode.KMS, USERSTORE_PAYLOAD_KEY_CACHE_S="1")
    kms = _kms(settings)
    old_payload = kms.describe_key(KeyId=settings.payload_kms_key)["KeyMetadata"]["Arn"]
    proof = kms.encrypt(KeyId=old_payload, Plaintext=b"proof")["CiphertextBlob"]
    users = [f"urn:fdc:gov.uk:2022:pay-{uuid.uuid4().hex[:10]}" for _ in range(4)]
    first = write_jsonl(tmp_path / "first.jsonl", [json.dumps(e) for e in _events(users, 0)])
    sealed = run_cli(env, "publish", "--seal", str(first))  # sits in the queue, under the old key
    assert sealed.returncode == 0, sealed.stderr

    new_payload = kms.create_key(Description="userstore payload next")["KeyMetadata"]["Arn"]
    rotated = run_cli(env, "rotate", "--payload-key", new_payload)
    assert rotated.returncode == 0, rotated.stderr[-2000:]
    waiting = _status(env)
    assert f"old key kms:{old_payload} is still needed" in waiting, waiting
    assert "messages in the queue and dead-letter queue may be sealed under it" in waiting

    later = [json.dumps(e) for e in _events(users, 1, "user.updated")]
    second = write_jsonl(tmp_path / "second.jsonl", later)
    assert run_cli(env, "publish", "--seal", str(second)).returncode == 0  # the new key
    _run_until_handled(env, tmp_path / "worker.log", settings, at_least=8)
    _wait_retirable(env, timeout_s=30)

    _disable(kms, old_payload, proof)
    third = [json.dumps(e) for e in _events(users, 2, "user.updated")]
    assert (
        run_cli(env, "publish", "--seal", str(write_jsonl(tmp_path / "3.jsonl", third))).returncode
        == 0
    )
    restarted = tmp_path / "restarted.log"
    _run_until_handled(env, restarted, settings, at_least=4)
    assert count_logged(restarted, "message.dead_lettered") == 0
    _assert_every_command_works(env, settings, users, tmp_path)
