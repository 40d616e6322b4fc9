"""Every failure an operator can cause at the command line, through the real `userstore` process
on a moto server: one line on stderr saying what is wrong and what to do, the documented exit
code (worker/cli_errors.py, the README's "Exit codes"), never a traceback.

Several commands run side by side per test, to keep the tier quick.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from tests.harness.settings import make_settings
from tests.harness.terminal import run_on_terminal
from tests.harness.traffic import make_events
from tests.harness.worker_process import env_for, provision_worker, run_cli, userstore
from userstore.worker.cli_errors import ExitCode


class Case(NamedTuple):
    env: dict[str, str]
    args: tuple[str, ...]
    code: ExitCode
    says: tuple[str, ...]  # each must be in the one line


def run_cases(cases: Mapping[str, Case]) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(
            zip(cases, pool.map(lambda c: run_cli(c.env, *c.args), cases.values()), strict=True)
        )
    for name, case in cases.items():
        assert_one_line(name, done[name], case.code, case.says)


def assert_one_line(
    name: str, done: subprocess.CompletedProcess[str], code: ExitCode, says: tuple[str, ...]
) -> None:
    seen = (name, done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, seen
    assert done.returncode == code, seen
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("userstore: "), seen
    for needle in says:
        assert needle in lines[0], (needle, *seen)


def test_before_provisioning_and_with_bad_settings(moto_endpoint: str) -> None:
    settings = make_settings(moto_endpoint)
    env = env_for(settings)
    key = settings.kms_key
    provision = "run `userstore provision`"
    not_provisioned = (key, "does not exist", "eu-west-2", moto_endpoint, provision)
    no_credentials = {
        k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    } | {
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    wrong_port = f"http://127.0.0.1:{_closed_port()}"
    run_cases(
        {
            "get": Case(env, ("get", "someone"), ExitCode.NOT_PROVISIONED, not_provisioned),
            "find": Case(
                env, ("find", "--email", "a@example.org"), ExitCode.NOT_PROVISIONED, not_provisioned
            ),
            "run": Case(env, ("run",), ExitCode.NOT_PROVISIONED, not_provisioned),
            "dlq list": Case(
                env,
                ("dlq", "list"),
                ExitCode.NOT_PROVISIONED,
                (settings.dlq, "USERSTORE_DLQ", provision),
            ),
            "no scheme": Case(
                env | {"AWS_ENDPOINT_URL": moto_endpoint.removeprefix("http://")},
                ("get", "someone"),
                ExitCode.USAGE,
                ("AWS_ENDPOINT_URL", "http://"),
            ),
            "bad setting": Case(
                env | {"USERSTORE_KEY_MODE": "bogus"},
                ("get", "someone"),
                ExitCode.USAGE,
                ("USERSTORE_KEY_MODE", "'kms' or 'cached'"),
            ),
            "empty user id": Case(env, ("get", ""), ExitCode.USAGE, ("USER_ID", "--help")),
            "no credentials": Case(
                no_credentials,
                ("get", "someone"),
                ExitCode.USAGE,
                ("credentials", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"),
            ),
            "wrong port": Case(
                env | {"AWS_ENDPOINT_URL": wrong_port, "USERSTORE_AWS_MAX_ATTEMPTS": "2"},
                ("get", "someone"),
                ExitCode.AWS_UNAVAILABLE,
                (wrong_port, "try again later"),
            ),
        }
    )


def test_mistakes_after_provisioning(moto_endpoint: str, tmp_path: Path) -> None:
    worker = provision_worker(moto_endpoint)
    env = worker.env
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run_cases(
            {
                "find, no match": Case(
                    env,
                    ("find", "--email", "nobody@example.org"),
                    ExitCode.NOT_FOUND,
                    ("no user has that email",),
                ),
                "rotate to a key that does not exist": Case(
                    env,
                    ("rotate", "--to", "nonsense"),
                    ExitCode.USAGE,
                    ("--to", "'nonsense'", "eu-west-2"),
                ),
                "rotate to new in kms mode": Case(
                    env,
                    ("rotate", "--to", "new"),
                    ExitCode.USAGE,
                    ("--to", "USERSTORE_KEY_MODE=cached", "alias/"),
                ),
                "redrive an unknown class": Case(
                    env,
                    ("dlq", "redrive", "--error", "NoSuchClass"),
                    ExitCode.USAGE,
                    ("NoSuchClass", "InvalidMessage", "RecordTampered"),
                ),
                "wrong table name": Case(
                    env | {"USERSTORE_TABLE": "no-such-table"},
                    ("get", "someone"),
                    ExitCode.NOT_PROVISIONED,
                    ("table 'no-such-table'", "USERSTORE_TABLE", "run `userstore provision`"),
                ),
                "metrics port in use": Case(
                    env | {"USERSTORE_METRICS_PORT": str(port)},
                    ("run",),
                    ExitCode.USAGE,
                    (f"127.0.0.1:{port}", "USERSTORE_METRICS_PORT"),
                ),
                "the embedded extra is missing": Case(
                    env | {"PYTHONPATH": str(_without_moto(tmp_path))},
                    ("demo",),
                    ExitCode.USAGE,
                    ("pip install 'userstore[embedded]'",),
                ),
            }
        )

    # publish from a terminal says what it waits for; the events typed are sent at Ctrl-D.
    events, _ = make_events(users=1, per_user=1, seed=5)
    typed = "".join(json.dumps(e) + "\n" for e in events)
    shown = run_on_terminal(userstore("publish"), env, typed)
    assert shown.returncode == 0, shown.terminal
    assert "reading events as JSON lines until end of input (Ctrl-D)" in shown.terminal
    assert shown.stdout == f"sent {len(events)} events\n"
    assert "Traceback" not in shown.terminal


def test_logs_are_readable_on_a_terminal_and_json_otherwise(moto_endpoint: str) -> None:
    env = env_for(make_settings(moto_endpoint))
    on_terminal = run_on_terminal(userstore("provision"), env)
    assert on_terminal.returncode == 0, on_terminal.terminal
    logged = [line for line in on_terminal.terminal.splitlines() if "provision." in line]
    assert logged, on_terminal.terminal
    assert not any(line.lstrip().startswith("{") for line in logged), logged
    # Not a terminal: JSON lines; and on request on a terminal too.
    piped = run_cli(env, "provision")
    assert piped.returncode == 0, piped.stderr
    assert all(json.loads(line)["event"] for line in piped.stderr.splitlines())
    asked = run_on_terminal(userstore("--log-format", "json", "provision"), env)
    assert asked.returncode == 0, asked.terminal
    assert all(json.loads(line)["event"] for line in asked.terminal.splitlines())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _without_moto(tmp_path: Path) -> Path:
    """A folder to put first on PYTHONPATH: `import moto` fails there as without the extra."""
    shadow = tmp_path / "no-moto" / "moto"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('moto is not installed (test)')\n")
    return shadow.parent
