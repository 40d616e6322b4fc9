"""The command line's failures, without AWS: which exit code and line each error of the tree
gets, the translations into the tree (settings, endpoints, botocore), and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from userstore.worker.aws import unavailable
from userstore.worker.cli_errors import ExitCode, Failure, Where, failure, unexpected
from userstore.worker.endpoints import check_endpoints
from userstore.worker.errors import (
    AwsUnavailable,
    ControlRolledBack,
    CredentialsMissing,
    ExtraNotInstalled,
    InsecureEndpoint,
    InvalidSetting,
    KeyNotFound,
    KeyUnavailable,
    NotProvisioned,
    OperationRefused,
    RecordTampered,
    ResourceMissing,
    SweepBusy,
    UserNotFound,
    UserstoreError,
    WriteConflict,
)
from userstore.worker.settings import read_settings

README = Path(__file__).resolve().parents[2] / "README.md"
WHERE = Where(
    "eu-west-2",
    "http://127.0.0.1:4566",
    {"users": "USERSTORE_TABLE", "alias/userstore": "USERSTORE_KMS_KEY"},
)


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        (UserNotFound("no such user"), ExitCode.NOT_FOUND, ["no such user"]),
        (RecordTampered("sig\nmismatch"), ExitCode.VERIFICATION_FAILED, ["failed verification"]),
        (ControlRolledBack("older"), ExitCode.VERIFICATION_FAILED, ["failed verification"]),
        (
            KeyNotFound("no such key", name="alias/userstore"),
            ExitCode.NOT_PROVISIONED,
            [
                "'alias/userstore'",
                "eu-west-2",
                "127.0.0.1:4566",
                "userstore provision",
                "USERSTORE_KMS_KEY",
            ],
        ),
        (
            ResourceMissing("GetItem: table", kind="table", name="users"),
            ExitCode.NOT_PROVISIONED,
            ["table 'users'", "eu-west-2", "userstore provision", "USERSTORE_TABLE"],
        ),
        (
            NotProvisioned("the table has no control records: run `userstore provision`"),
            ExitCode.NOT_PROVISIONED,
            ["control records", "eu-west-2"],
        ),
        (CredentialsMissing("x"), ExitCode.USAGE, ["AWS_ACCESS_KEY_ID", "AWS_PROFILE"]),
        (InvalidSetting("USERSTORE_KEY_MODE: bad"), ExitCode.USAGE, ["USERSTORE_KEY_MODE"]),
        (InsecureEndpoint("plain HTTP"), ExitCode.USAGE, ["plain HTTP"]),
        (ExtraNotInstalled("pip install x"), ExitCode.USAGE, ["pip install x"]),
        (OperationRefused("no index key version 7"), ExitCode.USAGE, ["version 7"]),
        (SweepBusy("another sweep"), ExitCode.SWEEP_BUSY, ["another sweep", "nothing done"]),
        (
            AwsUnavailable("GetItem failed: could not reach http://h:1/ (EndpointConnectionError)"),
            ExitCode.AWS_UNAVAILABLE,
            ["http://h:1/", "eu-west-2", "try again later"],
        ),
        (KeyUnavailable("disabled"), ExitCode.AWS_UNAVAILABLE, ["disabled"]),
        (WriteConflict("lost"), ExitCode.AWS_UNAVAILABLE, ["lost"]),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, UserstoreError) else None,
)
def test_each_error_is_one_line_and_its_exit_code(
    error: UserstoreError, code: ExitCode, says: list[str]
) -> None:
    done = failure(error, WHERE)
    assert done.code is code
    line = done.line()
    assert "\n" not in line and line.startswith("userstore: ")
    for needle in says:
        assert needle in line, (needle, line)


def test_the_kinds_of_failure_have_distinct_codes() -> None:
    kinds = [
        ExitCode.NOT_FOUND,
        ExitCode.VERIFICATION_FAILED,
        ExitCode.AWS_UNAVAILABLE,
        ExitCode.NOT_PROVISIONED,
        ExitCode.USAGE,
        ExitCode.SWEEP_UNFINISHED,
        ExitCode.SWEEP_BUSY,
        ExitCode.INTERNAL,
    ]
    assert len({int(kind) for kind in kinds}) == len(kinds)
    assert ExitCode.OK not in kinds


def test_a_bug_is_named_by_class_only() -> None:
    done = unexpected(ValueError("alice@example.org"))
    assert done.code is ExitCode.INTERNAL
    assert "ValueError" in done.line() and "--debug" in done.line()
    assert "alice" not in done.line()


def test_a_line_never_spans_lines() -> None:
    assert Failure(ExitCode.USAGE, "one\ntwo\r\n three").line() == "userstore: one two three"


# --- translations into the tree --------------------------------------------------------------


def test_a_bad_setting_names_its_variable_and_allowed_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USERSTORE_KEY_MODE", "bogus")
    monkeypatch.setenv("USERSTORE_MAX_IN_FLIGHT", "-1")
    with pytest.raises(InvalidSetting) as caught:
        read_settings()
    reason = caught.value.reason
    assert "USERSTORE_KEY_MODE: Input should be 'kms' or 'cached'" in reason
    assert "USERSTORE_MAX_IN_FLIGHT: Input should be greater than 0" in reason
    assert "bogus" not in reason and "\n" not in reason


def test_settings_that_disagree_are_named_by_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERSTORE_AWS_READ_TIMEOUT_S", "5")
    with pytest.raises(
        InvalidSetting,
        match="USERSTORE_AWS_READ_TIMEOUT_S must be longer than USERSTORE_WAIT_TIME_S",
    ):
        read_settings()


@pytest.mark.parametrize("allow_insecure", [False, True])
@pytest.mark.parametrize(
    ("name", "url"),
    [("AWS_ENDPOINT_URL", "127.0.0.1:5055"), ("AWS_ENDPOINT_URL_SQS", "localhost:4566")],
)
def test_an_endpoint_without_a_scheme_is_a_setting_error(
    name: str, url: str, allow_insecure: bool
) -> None:
    own = url if name == "AWS_ENDPOINT_URL" else None
    with pytest.raises(InvalidSetting) as caught:
        check_endpoints(own, {name: url}, allow_insecure=allow_insecure)
    assert name in caught.value.reason and f"http://{url}" in caught.value.reason


def test_botocore_failures_are_translated_into_the_tree() -> None:
    missing_credentials = unavailable("DescribeKey", NoCredentialsError(), {})
    assert isinstance(missing_credentials, CredentialsMissing)

    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:5099/")
    unreachable = unavailable("GetItem", refused, {"TableName": "users"})
    assert type(unreachable) is AwsUnavailable
    assert "http://127.0.0.1:5099/" in unreachable.reason

    for code, kwargs, kind, name in [
        ("ResourceNotFoundException", {"TableName": "users"}, "table", "users"),
        (
            "AWS.SimpleQueueService.NonExistentQueue",
            {"QueueUrl": "http://h/123/events.fifo"},
            "queue",
            "events.fifo",
        ),
        ("QueueDoesNotExist", {"QueueName": "events.fifo"}, "queue", "events.fifo"),
    ]:
        error = ClientError({"Error": {"Code": code, "Message": "m"}}, "Op")
        translated = unavailable("Op", error, kwargs)
        assert isinstance(translated, ResourceMissing), code
        assert (translated.kind, translated.name) == (kind, name)
        # still unavailable to the worker: retried, as a table AWS is creating answers the same
        assert isinstance(translated, AwsUnavailable)


# --- the README ------------------------------------------------------------------------------


def test_the_readme_lists_every_exit_code() -> None:
    section = README.read_text(encoding="utf-8").split("### Exit codes", 1)[1].split("\n#", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| `(\d+)`", section, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}
