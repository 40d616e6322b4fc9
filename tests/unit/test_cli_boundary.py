"""The command line's one error boundary, in this process: one line and an exit code for every
failure, a bug named by class only, a traceback only when asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from userstore.events.schema import generate
from userstore.events.schema import main as schema_main
from userstore.worker import cli
from userstore.worker.cli_errors import ExitCode
from userstore.worker.errors import InvalidSetting


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        cli.command_line(args)
    code = exited.value.code
    return int(code) if isinstance(code, int) else 0, capsys.readouterr().err


def failing_settings(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def read() -> None:
        raise error

    monkeypatch.setattr(cli, "read_settings", read)


def assert_one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("userstore: "), stderr
    return lines[0]


def test_a_usage_mistake_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, stderr = run(["nosuch"], capsys)
    assert code == ExitCode.USAGE
    assert "No such command 'nosuch'" in assert_one_line(stderr)
    code, stderr = run(["get"], capsys)
    assert code == ExitCode.USAGE
    assert "USER_ID" in assert_one_line(stderr)


def test_an_expected_failure_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing_settings(monkeypatch, InvalidSetting("invalid setting: USERSTORE_KEY_MODE: no"))
    code, stderr = run(["get", "someone"], capsys)
    assert code == ExitCode.USAGE
    assert assert_one_line(stderr) == "userstore: invalid setting: USERSTORE_KEY_MODE: no"


def test_a_bug_is_one_line_naming_its_class_and_its_traceback_is_on_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("USERSTORE_LOG_LEVEL", raising=False)
    failing_settings(monkeypatch, RuntimeError("alice@example.org"))
    code, stderr = run(["get", "someone"], capsys)
    assert code == ExitCode.INTERNAL
    line = assert_one_line(stderr)
    assert "RuntimeError" in line and "--debug" in line and "alice" not in line

    for args, env in ((["--debug", "get", "someone"], None), (["get", "someone"], "DEBUG")):
        if env:
            monkeypatch.setenv("USERSTORE_LOG_LEVEL", env)
        code, stderr = run(args, capsys)
        assert code == ExitCode.INTERNAL
        assert "Traceback" in stderr
        assert stderr.splitlines()[-1].startswith("userstore: unexpected error (RuntimeError)")


def test_ctrl_c_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing_settings(monkeypatch, KeyboardInterrupt())
    code, stderr = run(["get", "someone"], capsys)
    assert code == ExitCode.INTERRUPTED
    assert stderr.strip().splitlines()[-1] == "userstore: interrupted"
    assert "Traceback" not in stderr


def test_the_schema_check_says_what_it_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert schema_main(["--dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert schema_main(["--check", "--dir", str(tmp_path)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"checked {len(generate())} schemas in ") and "up to date" in said
    assert schema_main(["--dir", str(tmp_path)]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_logs_are_readable_on_a_terminal_but_for_run_json_otherwise() -> None:
    assert cli.human_logs("auto", "provision", terminal=True)
    assert not cli.human_logs("auto", "provision", terminal=False)
    assert not cli.human_logs("auto", "run", terminal=True)  # collected: JSON lines
    assert cli.human_logs("console", "run", terminal=False)
    assert not cli.human_logs("json", "rotate", terminal=True)
