"""The e2e tier against an external target (tests/harness/external.py): refused at start unless
named explicitly; then only the tests that take `aws_endpoint` run, those needing emulator-only
powers skipped with the reason."""

from __future__ import annotations

import pytest

from tests.harness.emulator import E2E_DIR
from tests.harness.external import (
    EXTERNAL_SKIPS,
    Refused,
    check_account,
    clients_for,
    external_target,
)

_LEFT_OUT = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse before anything is collected, let alone created."""
    try:
        target = external_target()
        if target is not None and target.account is not None:
            check_account(target, clients_for(target)["sts"])
    except Refused as refused:
        raise pytest.UsageError(f"e2e tier: {refused}") from None


def pytest_report_header(config: pytest.Config) -> str | None:
    target = external_target()
    return None if target is None else f"e2e tier: {target.describe()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    target = external_target()
    if target is None:
        return
    keep: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        if not item.nodeid.startswith(E2E_DIR):
            keep.append(item)
        elif "aws_endpoint" not in getattr(item, "fixturenames", ()):
            left_out.append(item)  # it never touches the target
        else:
            reason = EXTERNAL_SKIPS.get(item.nodeid.split("[", 1)[0])
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"external target: {reason}"))
            keep.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = keep
    config.stash[_LEFT_OUT] = [i.nodeid for i in left_out]


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    left_out = config.stash.get(_LEFT_OUT, [])
    if not left_out:
        return []
    return [f"external target: {len(left_out)} e2e tests don't take aws_endpoint, deselected"]
