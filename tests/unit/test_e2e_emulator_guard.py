"""The guard that keeps the e2e tier on both emulators: an e2e test bound to `moto_endpoint`
(outside the stated exceptions) stops the run at collection, on moto as on ministack, instead of
being deselected on ministack without a word."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import conftest
from tests.harness.emulator import MOTO_ONLY_E2E, moto_bound_e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("node_id", "fixtures", "bound"),
    [
        ("tests/e2e/test_x.py::test_a", ["moto_endpoint", "tmp_path"], True),
        # through another fixture: the closure names it too
        ("tests/e2e/test_x.py::test_b", ["provisioned_settings", "moto_endpoint"], True),
        ("tests/e2e/test_x.py::test_c[kms]", ["aws_endpoint", "tmp_path"], False),
        ("tests/e2e/test_x.py::test_d", ["tmp_path"], False),
        ("tests/integration/test_x.py::test_e", ["moto_endpoint"], False),
        ("tests/e2e/test_iam_policies.py::test_f", ["moto_endpoint"], False),
    ],
)
def test_moto_bound_e2e(node_id: str, fixtures: list[str], bound: bool) -> None:
    assert moto_bound_e2e([(node_id, fixtures)]) == ([node_id] if bound else [])


def test_collection_refuses_a_moto_bound_e2e_test(pytestconfig: pytest.Config) -> None:
    items = [
        SimpleNamespace(nodeid="tests/e2e/test_x.py::test_ok", fixturenames=["aws_endpoint"]),
        SimpleNamespace(nodeid="tests/e2e/test_x.py::test_moto", fixturenames=["moto_endpoint"]),
    ]
    with pytest.raises(pytest.UsageError) as refused:
        conftest.pytest_collection_modifyitems(pytestconfig, items)  # type: ignore[arg-type]
    named = [line.strip() for line in str(refused.value).splitlines() if "::" in line]
    assert named == ["tests/e2e/test_x.py::test_moto"]


@pytest.mark.parametrize("module", sorted(MOTO_ONLY_E2E))
def test_each_exception_is_a_module_that_uses_moto_endpoint(module: str) -> None:
    """A stale entry would let a new test of that name slip through unseen."""
    assert MOTO_ONLY_E2E[module]
    assert "moto_endpoint" in (ROOT / module).read_text()
