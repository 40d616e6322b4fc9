"""The error tree: the drawing in worker/errors.py is the tree the classes make, every worker
error lives there, nothing raises the bare root, and no error is named by a string literal."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

from userstore.worker import errors
from userstore.worker.errors import UserstoreError

PACKAGE = Path(errors.__file__).parent
_DRAWN = re.compile(r"^    ((?:[│ ]   )*[├└]── )?(\w+)")


def worker_errors() -> set[type[UserstoreError]]:
    """Every subclass of UserstoreError that a module of userstore.worker defines."""
    for module in pkgutil.walk_packages([str(PACKAGE)], "userstore.worker."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)

    def tree(cls: type[UserstoreError]) -> set[type[UserstoreError]]:
        return {cls}.union(*(tree(sub) for sub in cls.__subclasses__()))

    return {c for c in tree(UserstoreError) if c.__module__.startswith("userstore.worker")}


def render(cls: type[UserstoreError], known: set[type[UserstoreError]]) -> list[str]:
    """The tree from `cls` down, drawn the way the docstring draws it (names only)."""
    lines = [cls.__name__]

    def walk(parent: type[UserstoreError], prefix: str) -> None:
        children = [c for c in parent.__subclasses__() if c in known]
        for index, child in enumerate(children):
            last = index == len(children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{child.__name__}")
            walk(child, prefix + ("    " if last else "│   "))

    walk(cls, "")
    return lines


def drawn() -> list[str]:
    lines = []
    for line in (errors.__doc__ or "").splitlines():
        found = _DRAWN.match(line)
        if found and (found[1] or found[2] == "UserstoreError"):
            lines.append((found[1] or "") + found[2])
    return lines


def test_the_drawing_is_the_tree_the_classes_make() -> None:
    assert drawn() == render(UserstoreError, worker_errors())


def test_every_worker_error_is_defined_in_errors_py() -> None:
    elsewhere = {c.__qualname__: c.__module__ for c in worker_errors()}
    assert {n: m for n, m in elsewhere.items() if m != "userstore.worker.errors"} == {}


def tree_names() -> set[str]:
    return {c.__name__ for c in worker_errors()} | {"InvalidEvent", "EventError"}


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + sorted((PACKAGE.parent / "events").rglob("*.py"))


def test_nothing_raises_the_bare_root() -> None:
    found = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                name = (
                    raised.attr if isinstance(raised, ast.Attribute) else getattr(raised, "id", "")
                )
                if name in ("UserstoreError", "EventError"):
                    found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_no_error_is_named_by_a_string_literal() -> None:
    """A class name in a string (say "InvalidMessage" for a dead letter's error) hides a raise
    the tree does not know of: raise the class and let its name be read off it."""
    names = tree_names()
    found = []
    for path in sources():
        module = ast.parse(path.read_text(), str(path))
        exported = {  # __all__ lists names as strings, rightly
            id(constant)
            for node in module.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for constant in ast.walk(node.value)
        }
        for node in ast.walk(module):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in exported:
                found.append(f"{path.name}:{node.lineno}: {node.value}")
    assert found == []
