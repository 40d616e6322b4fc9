"""Emulator processes on free loopback ports, started and stopped by the test harness.

moto server (the default) or ministack (a LocalStack-compatible emulator, provisioned at start by
the project's localstack/ready.d hooks); USERSTORE_TEST_EMULATOR picks the e2e tier's backend.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from userstore.worker.resources import RESOURCES_FILE

ROOT = Path(__file__).resolve().parents[2]
HOOKS_DIR = ROOT / "localstack" / "ready.d"
# ministack pins botocore, so it lives in a virtualenv of its own (`./dev test` creates it).
MINISTACK_PYTHON = Path(
    os.environ.get("USERSTORE_TEST_MINISTACK_PYTHON", ROOT / ".venv-ministack" / "bin" / "python")
)
EMULATORS = ("moto", "ministack")
E2E_DIR = "tests/e2e/"
# The e2e modules allowed to use the moto-only `moto_endpoint` fixture, each with why it can't
# run on ministack too. Every other e2e test that needs an emulator takes `aws_endpoint`.
MOTO_ONLY_E2E: Mapping[str, str] = {
    "tests/e2e/test_iam_policies.py": (
        "checks the policies' ARNs built with moto's account id (iam_run.placeholders); it is"
        " about which calls the worker makes, not how an emulator answers them"
    ),
}


def selected_emulator() -> str:
    name = os.environ.get("USERSTORE_TEST_EMULATOR", "moto")
    if name not in EMULATORS:
        raise RuntimeError(f"USERSTORE_TEST_EMULATOR must be one of {EMULATORS}, not {name!r}")
    return name


def moto_bound_e2e(
    tests: Iterable[tuple[str, Collection[str]]], allowed: Collection[str] = MOTO_ONLY_E2E.keys()
) -> list[str]:
    """Node ids of e2e tests whose fixtures (directly or through another fixture) include
    `moto_endpoint`, outside the `allowed` modules: they would run on moto only, and on ministack
    be deselected without a word. `tests`: (node id, fixture closure) pairs."""
    return [
        node_id
        for node_id, fixtures in tests
        if node_id.startswith(E2E_DIR)
        and node_id.split("::", 1)[0] not in allowed
        and "moto_endpoint" in fixtures
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server_process() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        # moto's server, with DynamoDB writes made atomic (see tests/harness/atomic_moto.py).
        [sys.executable, "-m", "tests.harness.atomic_moto", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_hooks(endpoint: str) -> None:
    """Run the localstack/ready.d hooks against `endpoint`, as an emulator would at start.

    For moto, which has no hooks of its own, so the hook-provisioned defaults exist there too.
    """
    for hook in sorted(HOOKS_DIR.glob("*.py")):
        subprocess.run(
            [sys.executable, str(hook)],
            env={
                **os.environ,
                "AWS_ENDPOINT_URL": endpoint,
                "USERSTORE_RESOURCES_FILE": str(RESOURCES_FILE),
            },
            check=True,
            capture_output=True,
            timeout=60,
        )


@contextmanager
def ministack_process(log_path: Path) -> Iterator[str]:
    """ministack on a free loopback port, after its ready.d hooks (ours) all succeeded."""
    if not MINISTACK_PYTHON.exists():
        raise RuntimeError(
            f"no ministack virtualenv at {MINISTACK_PYTHON}: `./dev test` creates it"
            " (or set USERSTORE_TEST_MINISTACK_PYTHON)"
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        # Only what ministack and the hooks need: the worker's names come from their defaults.
        **{k: v for k, v in os.environ.items() if not k.startswith(("USERSTORE_", "AWS_"))},
        "GATEWAY_PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "MINISTACK_HOST": "127.0.0.1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": os.environ.get("AWS_REGION", "eu-west-2"),
        "USERSTORE_RESOURCES_FILE": str(RESOURCES_FILE),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(MINISTACK_PYTHON),
                str(Path(__file__).with_name("ministack_launch.py")),
                str(HOOKS_DIR),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        state = _wait_ready(proc, f"{url}/_ministack/ready", log_path)
        if state.get("failed") or not state.get("total"):
            raise RuntimeError(f"ministack's ready.d hooks: {state}\n{_tail(log_path)}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_ready(proc: subprocess.Popen[bytes], ready_url: str, log_path: Path) -> dict[str, object]:
    """ministack's /_ministack/ready answers 200 once every ready.d hook has finished."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as response:
                state: dict[str, object] = json.loads(response.read())
                return state
        except OSError:  # refused while starting; HTTP 503 while the hooks run
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ministack did not get ready:\n{_tail(log_path)}") from None
            time.sleep(0.1)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]
