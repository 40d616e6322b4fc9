"""The guard in front of the e2e tier's external mode (tests/harness/external.py): real AWS only
when the account id and the prefix were both named, and only when the credentials really are for
that account; nothing changes when no variable is set."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from tests.harness.external import (
    ACCOUNT_VAR,
    ENDPOINT_VAR,
    EXTERNAL_SKIPS,
    PREFIX_VAR,
    ExternalTarget,
    Refused,
    check_account,
    parse_target,
)
from tests.harness.tiers import TESTS_DIR

ACCOUNT = "111122223333"


def target(env: Mapping[str, str]) -> ExternalTarget | None:
    return parse_target(env, "abc123")


def test_no_variable_no_target() -> None:
    assert target({}) is None
    assert target({ENDPOINT_VAR: "", ACCOUNT_VAR: " "}) is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({ACCOUNT_VAR: ACCOUNT}, f"{PREFIX_VAR} is not"),
        ({PREFIX_VAR: "alice"}, f"neither {ENDPOINT_VAR} nor {ACCOUNT_VAR}"),
        ({ACCOUNT_VAR: "1111", PREFIX_VAR: "alice"}, "12-digit"),
        ({ACCOUNT_VAR: ACCOUNT, PREFIX_VAR: "Alice Smith"}, "lower-case"),
        ({ACCOUNT_VAR: ACCOUNT, PREFIX_VAR: "aws-tests"}, "not `aws`"),
        ({ENDPOINT_VAR: "localhost:4566"}, "with its scheme"),
    ],
)
def test_refuses_what_was_not_named_explicitly(env: dict[str, str], says: str) -> None:
    with pytest.raises(Refused, match=says):
        target(env)


def test_an_endpoint_alone_gets_the_default_prefix_and_a_run_id() -> None:
    found = target({ENDPOINT_VAR: "http://localhost:4566"})
    assert found == ExternalTarget("http://localhost:4566", None, "e2e", "abc123")
    assert found.run_prefix == "e2e-abc123-"


def test_real_aws_with_account_and_prefix() -> None:
    found = target({ACCOUNT_VAR: ACCOUNT, PREFIX_VAR: "alice"})
    assert found == ExternalTarget(None, ACCOUNT, "alice", "abc123")
    assert found.run_prefix == "alice-abc123-"
    assert "AWS account 111122223333" in found.describe()


def sts(account: str) -> Any:
    return SimpleNamespace(get_caller_identity=lambda: {"Account": account, "Arn": "arn:x"})


def test_refuses_credentials_of_another_account() -> None:
    named = target({ACCOUNT_VAR: ACCOUNT, PREFIX_VAR: "alice"})
    assert named is not None
    with pytest.raises(Refused, match="credentials are for AWS account 999999999999, not 1111"):
        check_account(named, sts("999999999999"))
    check_account(named, sts(ACCOUNT))  # the named one: accepted


def test_an_endpoint_without_account_asks_no_identity() -> None:
    named = target({ENDPOINT_VAR: "http://localhost:4566"})
    assert named is not None
    check_account(named, SimpleNamespace())  # would raise AttributeError if it asked


def test_every_listed_skip_names_an_existing_e2e_test() -> None:
    for node_id in EXTERNAL_SKIPS:
        path, function = node_id.split("::")
        assert f"def {function}(" in (TESTS_DIR.parent / path).read_text(), node_id
