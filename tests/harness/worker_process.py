"""The real `userstore` process: its command line and environment, provisioning fresh resources
for it (the preamble of every worker-process test), starting and stopping it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import boto3

from tests.harness.external import run_prefix
from tests.harness.settings import make_settings
from userstore.worker.settings import Settings


def userstore(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("userstore")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "userstore.worker", *args]


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERSTORE_")}
    if settings.aws_endpoint_url is not None:  # None: real AWS (tests/harness/external.py)
        env["AWS_ENDPOINT_URL"] = str(settings.aws_endpoint_url)
    if run_prefix():  # the run's own payload and storage keys, not the defaults
        env["USERSTORE_PAYLOAD_KMS_KEY"] = settings.payload_kms_key
        env["USERSTORE_STORAGE_KMS_KEY"] = settings.storage_kms_key
    env.update(
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


COMMAND_TIMEOUT_S = 60


def run_cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        userstore(*args),
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def provisioned(
    endpoint: str, env: dict[str, str] | None = None, **settings_overrides: Any
) -> tuple[Settings, dict[str, str]]:
    """Fresh resource names, provisioned by the real `userstore provision`, and the worker's
    environment for them (`env_for`, with `env` over it)."""
    settings = make_settings(endpoint, **settings_overrides)
    full_env = env_for(settings) | (env or {})
    done = run_cli(full_env, "provision")
    assert done.returncode == 0, done.stderr[-2000:]
    return settings, full_env


class Provisioned(NamedTuple):
    settings: Settings
    env: dict[str, str]
    sqs: Any
    ddb: Any
    url: str
    dlq: str


def provision_worker(
    endpoint: str, env: dict[str, str] | None = None, **settings_overrides: Any
) -> Provisioned:
    """The worker-process tests' preamble: `provisioned`, and boto3 clients on the emulator."""
    settings, full_env = provisioned(endpoint, env, **settings_overrides)
    return Provisioned(settings, full_env, *clients(settings))


def clients(settings: Settings) -> tuple[Any, Any, str, str]:
    session = boto3.session.Session(region_name=settings.aws_region)
    sqs = session.client("sqs", endpoint_url=settings.aws_endpoint_url)
    ddb = session.client("dynamodb", endpoint_url=settings.aws_endpoint_url)
    url = sqs.get_queue_url(QueueName=settings.queue)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=settings.dlq)["QueueUrl"]
    return sqs, ddb, url, dlq


@contextmanager
def background(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A process with stdout and stderr going to `log`; killed on the way out if still running."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def stop(proc: subprocess.Popen[bytes], within_s: float, log: Path) -> float:
    """SIGTERM; assert exit code 0 within `within_s`; return how long it took."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {within_s} s after SIGTERM:\n{log.read_text()[-3000:]}"
        ) from None
    assert code == 0, log.read_text(errors="replace")[-3000:]
    return time.monotonic() - started


def env_without_endpoint() -> dict[str, str]:
    """The test process's environment (dummy credentials, region) with no endpoint at all."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("USERSTORE_", "AWS_ENDPOINT_URL"))
    }


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("a") as out:
        return subprocess.Popen(userstore("run"), env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen[bytes], log: Path) -> str:
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=60)
    text = log.read_text()
    assert code == 0, text[-3000:]
    return text
