"""Folders are tiers: a test's first folder under tests/ is its tier and its marker.

A pytest plugin (tests/conftest.py loads it): it marks every test with `tier_of` its file, so
`pytest -m integration` selects exactly tests/integration. pyproject.toml registers the markers;
tests/unit/test_layout.py fails if a file's folder and marker disagree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = {
    "unit": "no AWS, no process: pure code and in-memory fakes",
    "integration": "the code in this process against a moto server process on loopback",
    "e2e": "the real userstore process (and command) against an emulator process",
    "reliability": "scenarios under load, faults and crashes (docs/reliability.md)",
    "faults": "the fault-injecting proxy, and the product behind it",
}
TESTS_DIR = Path(__file__).resolve().parent.parent


def tier_of(path: Path) -> str:
    """The tier of a test file: its first folder under tests/."""
    parts = path.resolve().relative_to(TESTS_DIR).parts
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(f"{path}: a test file lives in a tier folder: {', '.join(TIERS)}")
    return parts[0]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier_of(item.path))
