"""The one definition of the AWS resources the worker needs (resources.json), and its rendering.

`userstore provision` and the LocalStack ready.d hook (localstack/ready.d/userstore.py) both read
resources.json, so the two can't drift; tests/e2e/test_localstack_hooks.py proves they agree.
Rendering is pure: "${name}" strings become the setting's value, nothing else changes.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from .settings import Settings

# Beside this module (package data); `worker` is a namespace package, so not importlib.resources.
RESOURCES_FILE = Path(__file__).with_name("resources.json")


@cache
def definition() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(RESOURCES_FILE.read_text(encoding="utf-8"))
    return loaded


def setting_values(settings: Settings) -> dict[str, str]:
    """Every setting the definition refers to, as text (what the AWS APIs take)."""
    return {name: str(getattr(settings, name)) for name in definition()["defaults"]}


def render(node: Any, values: dict[str, str]) -> Any:
    """`node` with each "${name}" string replaced by values[name] (KeyError if unknown)."""
    if isinstance(node, str) and node.startswith("${") and node.endswith("}"):
        return values[node[2:-1]]
    if isinstance(node, dict):
        return {key: render(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [render(value, values) for value in node]
    return node


def queue_attributes(spec: dict[str, Any]) -> dict[str, str]:
    """A rendered queue's attributes as SQS takes them: objects as JSON text."""
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in spec.get("Attributes", {}).items()
    }


def fifo_attributes(name: str) -> dict[str, str]:
    """What a queue named `name` needs at creation to be FIFO (nothing for a standard queue)."""
    fifo: dict[str, str] = definition()["fifo_attributes"]
    return dict(fifo) if name.endswith(".fifo") else {}
