"""Generate the published JSON Schemas of the events from the models.

python -m userstore.events.schema          # (re)write events/schemas/*.json
python -m userstore.events.schema --check  # exit 1 if the committed files are stale
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import TypeAdapter

from .limits import SCHEMA_VERSION
from .models import (
    Event,
    EventType,
    SealedEvent,
    UserCreated,
    UserDeleted,
    UserUpdated,
)

__all__ = ["SCHEMA_DIR", "generate", "main", "render"]

SCHEMA_DIR: Final = Path(__file__).parent / "schemas"
_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_ID_PREFIX: Final = "urn:userstore:schema:"


def _finish(schema: dict[str, Any], name: str, title: str) -> dict[str, Any]:
    return {
        "$schema": _DIALECT,
        "$id": f"{_ID_PREFIX}{name}",
        "title": title,
        **{key: value for key, value in schema.items() if key != "title"},
    }


def generate() -> dict[str, dict[str, Any]]:
    """File name -> schema, for the union and for each event type."""
    version = f"v{SCHEMA_VERSION}"
    union_name = f"user-event.{version}.schema.json"
    schemas = {
        union_name: _finish(
            TypeAdapter(Event).json_schema(),
            union_name,
            f"userstore user event (schema version {SCHEMA_VERSION})",
        )
    }
    for event_type, model in (
        (EventType.CREATED, UserCreated),
        (EventType.UPDATED, UserUpdated),
        (EventType.DELETED, UserDeleted),
    ):
        name = f"{event_type.value}.{version}.schema.json"
        schemas[name] = _finish(
            TypeAdapter(model).json_schema(),
            name,
            f"{event_type.value} event (schema version {SCHEMA_VERSION})",
        )
    sealed_name = f"user-event.sealed.{version}.schema.json"
    schemas[sealed_name] = _finish(
        TypeAdapter(SealedEvent).json_schema(),
        sealed_name,
        f"userstore user event with sealed data (schema version {SCHEMA_VERSION})",
    )
    return schemas


def render(schema: dict[str, Any]) -> str:
    """Stable text form: sorted keys, two-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m userstore.events.schema", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if files are stale")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="schema directory")
    args = parser.parse_args(argv)
    directory: Path = args.dir

    expected = {name: render(schema) for name, schema in generate().items()}
    stale = sorted(
        name
        for name, text in expected.items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != text
    )
    if args.check:
        for name in stale:
            print(f"stale: {directory / name}", file=sys.stderr)
        if stale:
            print("run: python -m userstore.events.schema", file=sys.stderr)
            return 1
        print(
            f"checked {len(expected)} schemas in {directory} against the event models "
            f"(schema version {SCHEMA_VERSION}): up to date"
        )
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (directory / name).write_text(expected[name], "utf-8")
        print(f"wrote {directory / name}")
    if not stale:
        print(f"{len(expected)} schemas in {directory}: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
