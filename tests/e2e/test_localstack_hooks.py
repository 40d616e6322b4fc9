"""The localstack/ready.d hook and `userstore provision` create the same resources.

The emulator (`aws_endpoint`) was provisioned at start by the hook with the default names, as
`docker compose up` does: on ministack by ministack's own hook runner, on moto by the harness.
Each test provisions the other side under fresh names on the same emulator and compares
normalized descriptions (names replaced by their role), so any drift between the hook and the
product shows up as a difference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.harness.emulator import HOOKS_DIR, RESOURCES_FILE, selected_emulator
from tests.harness.logs import count_logged, log_records
from tests.harness.model import expected_profiles
from tests.harness.traffic import make_events, write_jsonl
from tests.harness.waiting import queue_counts, wait_until
from tests.harness.worker_process import background, env_without_endpoint, run_cli, stop, userstore
from userstore.worker.settings import Settings

NAMES = (
    "table",
    "meta_table",
    "state_table",
    "queue",
    "dlq",
    "kms_key",
    "payload_kms_key",
    "storage_kms_key",
)
# Attributes that describe a queue's identity or state, not its shape.
VOLATILE_QUEUE_ATTRIBUTES = frozenset({"QueueArn", "CreatedTimestamp", "LastModifiedTimestamp"})


def fresh_names(fifo: bool = True) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    suffix = ".fifo" if fifo else ""
    return {
        "table": f"hook-users-{tag}",
        "meta_table": f"hook-materials-{tag}",
        "state_table": f"hook-state-{tag}",
        "queue": f"hook-events-{tag}{suffix}",
        "dlq": f"hook-events-dlq-{tag}{suffix}",
        "kms_key": f"alias/hook-{tag}",
        "payload_kms_key": f"alias/hook-payload-{tag}",
        "storage_kms_key": f"alias/hook-storage-{tag}",
    }


def settings_env(endpoint: str, **values: str) -> dict[str, str]:
    """The test environment, no USERSTORE_ setting but `values` (table=... -> USERSTORE_TABLE)."""
    return (
        env_without_endpoint()
        | {"AWS_ENDPOINT_URL": endpoint}
        | {f"USERSTORE_{name.upper()}": value for name, value in values.items()}
    )


def run_hook(env: dict[str, str]) -> None:
    """The ready.d hook, run the way ministack runs it: a python process with its environment."""
    for hook in sorted(HOOKS_DIR.glob("*.py")):
        done = subprocess.run(
            [sys.executable, str(hook)],
            env=env | {"USERSTORE_RESOURCES_FILE": str(RESOURCES_FILE)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]


def describe(endpoint: str, names: dict[str, str]) -> dict[str, Any]:
    """Everything provisioned under `names`, with each name (and ARN) replaced by its role."""
    session = boto3.session.Session(region_name="eu-west-2")
    ddb = session.client("dynamodb", endpoint_url=endpoint)
    sqs = session.client("sqs", endpoint_url=endpoint)
    kms = session.client("kms", endpoint_url=endpoint)
    storage_key = kms.describe_key(KeyId=names["storage_kms_key"])["KeyMetadata"]["Arn"]

    def role_of_key(arn: str | None) -> str | None:
        return "<storage key>" if arn == storage_key else arn

    def table(name: str) -> dict[str, Any]:
        t = ddb.describe_table(TableName=name)["Table"]
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        sse = t.get("SSEDescription") or {}
        return {
            "status": t["TableStatus"],
            "key": t["KeySchema"],
            "attributes": sorted(t["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
            "billing": t.get("BillingModeSummary", {}).get("BillingMode"),
            "indexes": sorted(
                (
                    {k: i[k] for k in ("IndexName", "KeySchema", "Projection")}
                    for i in t.get("GlobalSecondaryIndexes", [])
                ),
                key=lambda i: i["IndexName"],
            ),
            "stream": t.get("StreamSpecification"),
            "has_stream_arn": bool(t.get("LatestStreamArn")),
            "ttl": (ttl.get("AttributeName"), ttl.get("TimeToLiveStatus")),
            "sse": (sse.get("Status"), sse.get("SSEType"), role_of_key(sse.get("KMSMasterKeyArn"))),
            "deletion_protection": t.get("DeletionProtectionEnabled"),
            "pitr": backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"],
        }

    def queue(name: str) -> dict[str, Any]:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        shape = {
            k: v
            for k, v in attrs.items()
            if k not in VOLATILE_QUEUE_ATTRIBUTES and not k.startswith("Approximate")
        }
        if "RedrivePolicy" in shape:
            redrive = json.loads(shape["RedrivePolicy"])
            target = redrive["deadLetterTargetArn"].rsplit(":", 1)[1]
            shape["RedrivePolicy"] = {
                "deadLetterTarget": "<dlq>" if target == names["dlq"] else target,
                "maxReceiveCount": int(redrive["maxReceiveCount"]),
            }
        if "KmsMasterKeyId" in shape:
            shape["KmsMasterKeyId"] = role_of_key(shape["KmsMasterKeyId"])
        if "Policy" in shape:
            # Each queue's policy names the queue itself.
            policy = json.loads(shape["Policy"])
            for statement in policy["Statement"]:
                if statement.get("Resource") == attrs["QueueArn"]:
                    statement["Resource"] = "<self>"
            shape["Policy"] = policy
        return shape

    def key(alias: str) -> dict[str, Any]:
        metadata = kms.describe_key(KeyId=alias)["KeyMetadata"]
        aliases = [
            a["AliasName"]
            for a in kms.list_aliases(KeyId=metadata["KeyId"])["Aliases"]
            if a["AliasName"] == alias
        ]
        return {
            **{k: metadata.get(k) for k in ("KeyUsage", "KeySpec", "KeyState", "Enabled")},
            "Description": metadata.get("Description"),
            "aliased": aliases == [alias],
        }

    return {
        "key": key(names["kms_key"]),
        "payload_key": key(names["payload_kms_key"]),
        "storage_key": key(names["storage_kms_key"]),
        "users": table(names["table"]),
        "materials": table(names["meta_table"]),
        "state": table(names["state_table"]),
        "queue": queue(names["queue"]),
        "dlq": queue(names["dlq"]),
    }


def defaults() -> dict[str, str]:
    settings = Settings()
    return {name: str(getattr(settings, name)) for name in NAMES}


def test_the_selected_emulator_is_the_one_serving(aws_endpoint: str) -> None:
    """USERSTORE_TEST_EMULATOR really picks the backend (an env clean-up once ate it silently)."""
    own_api = {"moto": "/moto-api/", "ministack": "/_ministack/health"}[selected_emulator()]
    with urllib.request.urlopen(f"{aws_endpoint}{own_api}", timeout=5) as response:
        assert response.status == 200


def test_hook_defaults_match_userstore_provision(aws_endpoint: str) -> None:
    """The emulator's start-up hook made the default names; `userstore provision` the same shape."""
    names = fresh_names()
    done = run_cli(settings_env(aws_endpoint, **names), "provision")
    assert done.returncode == 0, done.stderr[-2000:]

    by_hook = describe(aws_endpoint, defaults())
    by_provision = describe(aws_endpoint, names)

    assert by_hook == by_provision
    # Not two empty shapes: what the worker relies on is there.
    users = by_hook["users"]
    assert users["stream"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert users["has_stream_arn"]
    assert [i["IndexName"] for i in users["indexes"]] == ["email-index"]
    assert users["ttl"][0] == "expires_at"
    assert by_hook["queue"]["FifoQueue"] == "true"
    assert by_hook["queue"]["VisibilityTimeout"] == str(Settings().visibility_timeout_s)
    assert by_hook["queue"]["RedrivePolicy"] == {
        "deadLetterTarget": "<dlq>",
        "maxReceiveCount": Settings().max_receive_count,
    }
    assert by_hook["key"]["aliased"] and by_hook["payload_key"]["aliased"]
    assert by_hook["storage_key"]["aliased"]
    # Encrypted at rest, read back from the emulator.
    for role in ("users", "materials", "state"):
        assert by_hook[role]["sse"] == ("ENABLED", "KMS", "<storage key>"), role
        assert by_hook[role]["pitr"] == "ENABLED", role
        assert by_hook[role]["deletion_protection"] is (role == "users"), role
    for role in ("queue", "dlq"):
        shape = by_hook[role]
        assert shape["KmsMasterKeyId"] == "<storage key>", role
        assert shape["SqsManagedSseEnabled"] == "false", role
        [statement] = shape["Policy"]["Statement"]
        assert statement["Resource"] == "<self>" and statement["Effect"] == "Deny", role
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, role


def test_hook_reads_the_worker_settings_variables(aws_endpoint: str) -> None:
    """Same non-default settings (standard queues, other timeouts) through both: same result."""
    knobs = {
        "visibility_timeout_s": "45",
        "max_receive_count": "3",
        "queue_encryption": "sqs",
        "point_in_time_recovery": "0",
    }
    hook_names, provision_names = fresh_names(fifo=False), fresh_names(fifo=False)
    run_hook(settings_env(aws_endpoint, **hook_names, **knobs))
    done = run_cli(settings_env(aws_endpoint, **provision_names, **knobs), "provision")
    assert done.returncode == 0, done.stderr[-2000:]

    by_hook = describe(aws_endpoint, hook_names)
    assert by_hook == describe(aws_endpoint, provision_names)
    assert by_hook["queue"].get("FifoQueue", "false") == "false"
    assert by_hook["queue"]["VisibilityTimeout"] == "45"
    assert by_hook["queue"]["RedrivePolicy"]["maxReceiveCount"] == 3
    for role in ("queue", "dlq"):
        assert by_hook[role]["SqsManagedSseEnabled"] == "true", role
        assert not by_hook[role].get("KmsMasterKeyId"), role
    assert {by_hook[role]["pitr"] for role in ("users", "materials", "state")} == {"DISABLED"}

    # Run again: nothing changes, nothing fails.
    run_hook(settings_env(aws_endpoint, **hook_names, **knobs))
    assert describe(aws_endpoint, hook_names) == by_hook


def test_provision_puts_a_tables_encryption_back_under_the_storage_key(aws_endpoint: str) -> None:
    """A table's SSE moved to another key by hand: provision moves it back. (moto 5.2.5 ignores
    SSESpecification on update_table, so there the hand-made change never happens and this
    proves nothing more than provision twice; ministack applies it.)"""
    names = fresh_names()
    env = settings_env(aws_endpoint, **names)
    assert (done := run_cli(env, "provision")).returncode == 0, done.stderr[-2000:]
    session = boto3.session.Session(region_name="eu-west-2")
    ddb = session.client("dynamodb", endpoint_url=aws_endpoint)
    kms = session.client("kms", endpoint_url=aws_endpoint)
    other = kms.create_key(Description="not the storage key")["KeyMetadata"]["Arn"]
    ddb.update_table(
        TableName=names["table"],
        SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": other},
    )
    assert (done := run_cli(env, "provision")).returncode == 0, done.stderr[-2000:]
    assert describe(aws_endpoint, names)["users"]["sse"] == ("ENABLED", "KMS", "<storage key>")


@pytest.mark.timeout(120)
def test_worker_runs_on_the_hook_provisioned_defaults(aws_endpoint: str, tmp_path: Path) -> None:
    """`docker compose up` in small: no names configured, the hook's resources, a real worker."""
    env = settings_env(aws_endpoint, wait_time_s="1", drain_timeout_s="10")
    session = boto3.session.Session(region_name="eu-west-2")
    sqs = session.client("sqs", endpoint_url=aws_endpoint)
    url = sqs.get_queue_url(QueueName=Settings().queue)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=Settings().dlq)["QueueUrl"]
    events, personal = make_events(users=4, per_user=3, seed=21)

    sent = run_cli(env, "publish", str(write_jsonl(tmp_path / "events.jsonl", _lines(events))))
    assert sent.returncode == 0, sent.stderr[-2000:]
    log = tmp_path / "worker.log"
    with background(userstore("run"), env, log) as proc:
        wait_until(
            lambda: count_logged(log, "message.handled") >= len(events),
            90,
            "every event handled",
            proc,
            log,
        )
        stop(proc, 30, log)

    assert queue_counts(sqs, url) == (0, 0, 0)
    assert queue_counts(sqs, dlq) == (0, 0, 0)
    outcomes = {r.get("outcome") for r in log_records(log) if r.get("event") == "message.handled"}
    assert outcomes == {"applied"}, outcomes
    for user, profile in expected_profiles(events).items():
        shown = run_cli(env, "get", user)
        if profile is None:
            assert shown.returncode == 1, shown.stderr
        else:
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout) == profile
    text = log.read_text()
    for value in personal:
        assert value not in text


def _lines(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e) for e in events]
