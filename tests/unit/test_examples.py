"""examples/: the event files the README publishes. Each line is one event the contract accepts
(JSON lines: one object a line, nothing pretty-printed), and every .jsonl file the README names
is there."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from userstore.events import Event, parse_event, validate_event

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.jsonl"))


def _events(path: Path) -> list[Event]:
    return [parse_event(line) for line in path.read_text().splitlines()]


def test_there_are_examples() -> None:
    assert [p.name for p in EXAMPLES] == ["delete.jsonl", "events.jsonl"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_line_is_one_valid_event(path: Path) -> None:
    text = path.read_text()
    assert text.endswith("\n") and "\n\n" not in text, path.name
    for number, line in enumerate(text.splitlines(), start=1):
        document = json.loads(line)  # a whole object on its one line
        assert isinstance(document, dict), (path.name, number)
        # The pydantic models, and the parser `userstore publish` and the worker use.
        model = validate_event(document)
        assert parse_event(line) == model, (path.name, number)


def test_event_ids_are_unique_across_the_examples() -> None:
    ids = [event.event_id for path in EXAMPLES for event in _events(path)]
    assert len(ids) == len(set(ids)), ids


def test_every_jsonl_file_the_readme_names_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"[\w./-]+\.jsonl\b", readme))
    assert named, "the README names no event file"
    assert {name for name in named if not (ROOT / name).is_file()} == set()


def test_the_compose_worker_accepts_the_examples_for_years_to_come() -> None:
    """They are dated; compose's tombstone window must still take them a year from now."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    setting = compose["services"]["worker"]["environment"]["USERSTORE_TOMBSTONE_TTL_S"]
    match = re.fullmatch(r"\$\{USERSTORE_TOMBSTONE_TTL_S:-(\d+)\}", setting)
    assert match, setting
    window = timedelta(seconds=int(match.group(1)))
    oldest = min(event.occurred_at for path in EXAMPLES for event in _events(path))
    now = datetime.now(UTC)
    assert oldest <= now
    assert now + timedelta(days=365) - oldest < window, (oldest, window)


def test_the_readme_shows_exactly_the_example_files() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```jsonl\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) == 1, blocks
    files = (ROOT / "examples" / "events.jsonl").read_text()
    files += (ROOT / "examples" / "delete.jsonl").read_text()
    assert blocks[0] == files
