"""The e2e tier against an endpoint it did not start (tests/harness/external.py), for real.

This test plays the outside world: it starts a moto server and provisions it with the ready.d
hook, as `docker compose up localstack` does, then runs a few e2e tests in a pytest subprocess
with USERSTORE_TEST_ENDPOINT pointing at it. They must pass (and be more than none), the
emulator-only one must be skipped with its reason, and afterwards the server must hold exactly
what it held before: every table, queue and alias the run made carried the run prefix and is gone,
every key it made is pending deletion, and the hook's own resources are untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.harness.emulator import ROOT, moto_server_process, run_hooks
from tests.harness.external import paged

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-rs"]
SUBSET = [
    # provision and `publish --seal` by the real `userstore`, with a payload alias of its own
    "tests/e2e/test_sealed_publish_e2e.py::test_sealed_publish_is_applied_and_the_queue_never_holds_plaintext",
    # rotates: the first key loses its alias, and must be found and removed all the same
    "tests/e2e/test_sweep_e2e.py::test_sweep_max_duration_exit_codes",
    # emulator-only: skipped, with the reason
    "tests/e2e/test_localstack_hooks.py::test_the_selected_emulator_is_the_one_serving",
    # takes no aws_endpoint: deselected
    "tests/e2e/test_cli.py::test_demo_reports_outcomes_ciphertext_and_dead_letters",
]


def snapshot(endpoint: str) -> dict[str, Any]:
    session = boto3.session.Session(region_name="eu-west-2")
    ddb = session.client("dynamodb", endpoint_url=endpoint)
    sqs = session.client("sqs", endpoint_url=endpoint)
    kms = session.client("kms", endpoint_url=endpoint)
    keys = {
        k["KeyId"]: kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"]
        for k in paged(kms, "list_keys", "Keys")
    }
    return {
        "tables": sorted(paged(ddb, "list_tables", "TableNames")),
        "queues": sorted(u.rsplit("/", 1)[1] for u in sqs.list_queues().get("QueueUrls", [])),
        "aliases": sorted(a["AliasName"] for a in paged(kms, "list_aliases", "Aliases")),
        "keys": keys,
    }


@pytest.mark.timeout(300)
def test_the_e2e_tier_runs_on_an_outside_endpoint_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    prefix = f"outside{uuid.uuid4().hex[:4]}"
    junit, cleanup_log = tmp_path / "junit.xml", tmp_path / "cleanup.jsonl"
    with moto_server_process() as endpoint:
        run_hooks(endpoint)  # what LocalStack's ready.d hook made at start
        before = snapshot(endpoint)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(
            USERSTORE_TEST_ENDPOINT=endpoint,
            USERSTORE_TEST_PREFIX=prefix,
            USERSTORE_TEST_CLEANUP_LOG=str(cleanup_log),
        )
        done = subprocess.run(
            [*PYTEST, f"--junitxml={junit}", *SUBSET],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
        after = snapshot(endpoint)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"e2e tier: external target {endpoint}" in done.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": 3, "failures": 0, "errors": 0, "skipped": 1}, counts
    [skipped] = [case for case in suite.iter("testcase") if case.find("skipped") is not None]
    assert skipped.get("name") == "test_the_selected_emulator_is_the_one_serving"
    assert "external target: asks the harness-started emulator" in (
        skipped.find("skipped").get("message", "")  # type: ignore[union-attr]
    )
    assert "1 deselected" in done.stdout

    # What the run removed: all of it under the run prefix, and something of each kind.
    [removed] = [json.loads(line) for line in cleanup_log.read_text().splitlines()]
    run_prefix = removed["run_prefix"]
    assert run_prefix.startswith(f"{prefix}-") and len(run_prefix) > len(prefix) + 2
    assert all(name.startswith(run_prefix) for name in removed["tables"] + removed["queues"])
    assert all(name.startswith(f"alias/{run_prefix}") for name in removed["aliases"])
    # Something of each kind: the tests' tables, queues and key aliases, the run's payload and
    # storage aliases, and more keys than aliases (the one the sweep test rotated away from).
    assert removed["tables"] and removed["queues"]
    for role in ("payload", "storage"):
        assert f"alias/{run_prefix}userstore-{role}" in removed["aliases"]
    assert len(removed["keys"]) > len(removed["aliases"]) > 2, removed

    # The server holds what it held before (the hook's resources among it), no more, no less:
    # anything made under another name would still be there.
    assert before["tables"] and before["aliases"]
    for kind in ("tables", "queues", "aliases"):
        assert after[kind] == before[kind], kind
    made = set(after["keys"]) - set(before["keys"])
    assert made == set(removed["keys"])
    assert {after["keys"][k] for k in made} == {"PendingDeletion"}
    assert {k: after["keys"][k] for k in before["keys"]} == before["keys"]


@pytest.mark.parametrize(
    ("named", "says"),
    [
        ({"USERSTORE_TEST_AWS_ACCOUNT": "111122223333"}, "USERSTORE_TEST_PREFIX is not"),
        ({"USERSTORE_TEST_PREFIX": "alice"}, "neither USERSTORE_TEST_ENDPOINT nor"),
        # moto answers sts get-caller-identity with its own account, 123456789012
        (
            {"USERSTORE_TEST_AWS_ACCOUNT": "111122223333", "USERSTORE_TEST_PREFIX": "alice"},
            "credentials are for AWS account 123456789012, not 111122223333",
        ),
    ],
)
def test_a_target_not_named_explicitly_is_refused_before_collection(
    named: dict[str, str], says: str
) -> None:
    with moto_server_process() as endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        if "USERSTORE_TEST_AWS_ACCOUNT" in named and "USERSTORE_TEST_PREFIX" in named:
            env["USERSTORE_TEST_ENDPOINT"] = endpoint
        done = subprocess.run(
            [*PYTEST, "--collect-only", "-q", "tests/e2e/test_cli.py"],
            cwd=ROOT,
            env=env | named,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:] + done.stderr
    assert "e2e tier: " in done.stderr and says in done.stderr, done.stderr
    assert "test_get_prints_profile" not in done.stdout  # nothing was collected
