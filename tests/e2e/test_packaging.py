"""The wheel `pip install .` builds: every module, the type markers, the schemas, the command.

The wheel is built from the source tree, unpacked into a directory of its own, and imported from
there (not from the editable install): `userstore --version` and the `events` package work.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (built,) = out.glob("userstore-*.whl")
    return built


@pytest.mark.timeout(300)
def test_the_wheel_ships_every_module_the_markers_and_the_schemas(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        path.relative_to(ROOT).as_posix()
        for package in ("events", "worker")
        for path in (ROOT / package).rglob("*")
        if path.suffix in {".py", ".json"} and "__pycache__" not in path.parts
    }
    assert sources - names == set()
    assert {"events/py.typed", "worker/py.typed"} <= names
    schemas = {n for n in names if n.startswith("events/schemas/") and n.endswith(".json")}
    assert schemas == {
        f"events/schemas/{path.name}" for path in (ROOT / "events" / "schemas").glob("*.json")
    }
    assert len(schemas) == 5  # the three events, any event, and a sealed event
    for name in schemas:
        json.loads(zipfile.ZipFile(wheel).read(name))

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert wheel.name.startswith(f"userstore-{version}-")
    entry_points = configparser.ConfigParser()
    entry_points.read_string(
        zipfile.ZipFile(wheel).read(f"userstore-{version}.dist-info/entry_points.txt").decode()
    )
    assert entry_points["console_scripts"]["userstore"] == "worker.cli:main"
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.timeout(300)
def test_the_unpacked_wheel_imports_and_reports_its_version(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    script = (
        "import events, worker.streams.consumer, worker.cli, sys;"
        "from importlib.resources import files;"
        "assert files('events').joinpath('py.typed').is_file();"
        "assert files('events').joinpath('schemas/user-event.v1.schema.json').is_file();"
        "print(events.__file__);"
        "sys.argv = ['userstore', '--version']; worker.cli.main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported_from, version_line = done.stdout.splitlines()
    assert imported_from.startswith(str(site))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version_line == f"userstore, version {version}"
