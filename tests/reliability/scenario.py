"""What a reliability scenario tested, recorded for docs/reliability.md.

A test takes the `scenario` fixture and describes itself; `python -m tests.reliability.report`
runs the scenarios and writes the table from these records and the test outcomes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pytest

PROPERTY = "reliability_scenario"


@dataclass(frozen=True)
class Scenario:
    name: str
    load: str
    faults: str
    checked: str


class ScenarioRecorder:
    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    def describe(self, name: str, *, load: str, faults: str, checked: str) -> None:
        self._node.user_properties.append((PROPERTY, asdict(Scenario(name, load, faults, checked))))


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> ScenarioRecorder:
    assert isinstance(request.node, pytest.Item)
    return ScenarioRecorder(request.node)
