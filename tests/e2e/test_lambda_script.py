"""A Lambda handler called from a plain script, as an integrator tries one out: it answers, and
the process exits with its client sessions closed (no "Unclosed client session", no
ResourceWarning on stderr).

The handler keeps its clients for the container's lifetime (worker/lambdas.py); a script is not
a frozen container, so they are closed at exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.settings import make_settings, provision_settings, settings_env
from tests.harness.worker_process import run_cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "events.jsonl"

# The example events, as an SQS event source mapping hands them to the function.
SCRIPT = """
import json, sys
from pathlib import Path
from userstore.worker.lambdas import sqs_handler

records = []
for number, line in enumerate(Path(sys.argv[1]).read_text().splitlines(), start=1):
    event = json.loads(line)
    records.append({
        "messageId": f"m-{number}",
        "body": line,
        "attributes": {"MessageGroupId": event["user_id"], "ApproximateReceiveCount": "1"},
    })
print("ANSWER " + json.dumps(sqs_handler({"Records": records}, None)))
"""


@pytest.mark.timeout(180)
def test_a_handler_called_from_a_script_leaves_nothing_unclosed(aws_endpoint: str) -> None:
    # The examples are dated: a tombstone window wide enough to take them whenever this runs.
    settings = make_settings(aws_endpoint, tombstone_ttl_s=10 * 365 * 24 * 3600)
    asyncio.run(provision_settings(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERSTORE_")}
    env |= settings_env(settings)
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", SCRIPT, str(EXAMPLES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [line for line in done.stdout.splitlines() if line.startswith("ANSWER ")]
    assert answers == ['ANSWER {"batchItemFailures": []}'], done.stdout[-2000:]
    assert "Unclosed" not in done.stderr, done.stderr[-3000:]
    assert "ResourceWarning" not in done.stderr, done.stderr[-3000:]

    # The events were applied, not just acknowledged: the update's field is in the profile.
    user_id = json.loads(EXAMPLES.read_text().splitlines()[0])["user_id"]
    shown = run_cli(env, "get", user_id)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert {"email", "phone_number", "address"} <= set(json.loads(shown.stdout))
