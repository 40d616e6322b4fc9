"""The test suite's layout: folders are tiers, and no test module imports another.

tests/conftest.py marks each test with its first folder under tests/ (tests/harness/tiers.py);
shared helpers live in tests/harness/, never in a test module.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from tests.harness.tiers import TESTS_DIR, TIERS, tier_of

ROOT = TESTS_DIR.parent
TEST_FILES = sorted(TESTS_DIR.rglob("test_*.py"))
PY_FILES = sorted(TESTS_DIR.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _tier_marks(tree: ast.AST) -> set[str]:
    """Tiers named as `pytest.mark.<tier>` anywhere in a module (pytestmark or decorators)."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in TIERS
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "mark"
    }


def _test_modules_imported(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            # `from tests.e2e.test_x import y` and `from tests.e2e import test_x` alike.
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [m for m in modules if m.rsplit(".", 1)[-1].startswith("test_")]
    return found


def test_the_suite_is_found() -> None:
    assert len(TEST_FILES) > 50
    assert {path.relative_to(TESTS_DIR).parts[0] for path in TEST_FILES} == set(TIERS)


@pytest.mark.parametrize("path", TEST_FILES, ids=_name)
def test_a_test_file_lives_in_a_tier_folder_and_marks_no_other_tier(path: Path) -> None:
    tier = tier_of(path)
    others = _tier_marks(ast.parse(path.read_text(), str(path))) - {tier}
    assert not others, f"{_name(path)} is in tests/{tier}/ but marked {sorted(others)}"


def test_every_tier_is_a_registered_marker() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    markers = config["tool"]["pytest"]["ini_options"]["markers"]
    assert {line.split(":", 1)[0] for line in markers} == set(TIERS)


def test_the_folder_marks_its_tests(request: pytest.FixtureRequest) -> None:
    marks = {mark.name for mark in request.node.iter_markers()} & set(TIERS)
    assert marks == {"unit"}


def test_tier_of_refuses_a_test_outside_the_tier_folders() -> None:
    with pytest.raises(pytest.UsageError, match="tier folder"):
        tier_of(TESTS_DIR / "test_loose.py")
    with pytest.raises(pytest.UsageError, match="tier folder"):
        tier_of(TESTS_DIR / "harness" / "test_helper.py")


@pytest.mark.parametrize("path", PY_FILES, ids=_name)
def test_no_module_imports_a_test_module(path: Path) -> None:
    imported = _test_modules_imported(ast.parse(path.read_text(), str(path)))
    assert not imported, f"{_name(path)} imports {imported}: move what it needs to tests/harness/"


def test_the_import_check_sees_both_forms() -> None:
    tree = ast.parse(
        "from tests.e2e.test_cli import run_cli\n"
        "from tests.unit import test_keys\n"
        "import tests.integration.test_store\n"
        "from tests.harness.worker_process import userstore\n"
    )
    assert _test_modules_imported(tree) == [
        "tests.e2e.test_cli",
        "tests.unit.test_keys",
        "tests.integration.test_store",
    ]


def test_no_test_module_is_named_like_a_standard_library_module() -> None:
    # A helper run as a script (the ministack launcher) puts its own folder first on sys.path;
    # a sibling named like a standard module (`queue.py`) then breaks the standard library.
    import sys

    shadowing = sorted(
        str(path.relative_to(TESTS_DIR))
        for path in TESTS_DIR.rglob("*.py")
        if path.stem in sys.stdlib_module_names
    )
    assert shadowing == []
