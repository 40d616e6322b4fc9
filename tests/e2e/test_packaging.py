"""The wheel `pip install .` builds: every module, the type markers, the schemas, the command.

The wheel is built from the source tree, unpacked into a directory of its own, and imported from
there (not from the editable install): `userstore --version` and the `userstore.events` package
work. Everything installs under the one name `userstore`, and the base install (the event contract
and publisher client) needs none of the worker's pinned stack.
"""

from __future__ import annotations

import configparser
import email.parser
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

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
        f"userstore/{path.relative_to(ROOT).as_posix()}"
        for package in ("events", "worker")
        for path in (ROOT / package).rglob("*")
        if path.suffix in {".py", ".json"} and "__pycache__" not in path.parts
    }
    assert sources - names == set()
    # One top-level import name of the project's own, nothing generic beside it.
    assert {name.split("/")[0] for name in names} == {
        "userstore",
        f"{wheel.name.split('-py')[0]}.dist-info",
    }
    assert {"userstore/events/py.typed", "userstore/worker/py.typed"} <= names
    prefix = "userstore/events/schemas/"
    schemas = {n for n in names if n.startswith(prefix) and n.endswith(".json")}
    assert schemas == {
        f"{prefix}{path.name}" for path in (ROOT / "events" / "schemas").glob("*.json")
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
    assert entry_points["console_scripts"]["userstore"] == "userstore.worker.entry:main"
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()

    # The base requirements are the publisher's: no worker pins; the worker's are an extra.
    metadata = zipfile.ZipFile(wheel).read(f"userstore-{version}.dist-info/METADATA").decode()
    requires = [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    base = [r for r in requires if "extra ==" not in r]
    worker = [r for r in requires if 'extra == "worker"' in r]
    for name in ("aiobotocore", "boto3", "dynamodb-encryption-sdk", "click", "structlog"):
        assert not any(r.startswith(name) for r in base), base
        assert any(r.startswith(name) for r in worker), worker
    assert not any("==" in r for r in base), base


@pytest.mark.timeout(300)
def test_the_wheel_carries_the_license_the_urls_and_the_classifiers(wheel: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    info = f"userstore-{version}.dist-info"
    archive = zipfile.ZipFile(wheel)
    metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    # PEP 639: the SPDX expression, and the license text itself in the dist-info.
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    shipped = archive.read(f"{info}/licenses/LICENSE").decode()
    assert shipped == (ROOT / "LICENSE").read_text()
    assert shipped.startswith("MIT License") and "userstore contributors" in shipped
    urls = dict(line.split(", ", 1) for line in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Repository", "Documentation", "Changelog", "Issues"}
    assert all(url.startswith("https://") for url in urls.values()), urls
    classifiers = set(metadata.get_all("Classifier") or [])
    assert {
        "Programming Language :: Python :: 3.11",
        "Operating System :: OS Independent",
        "Framework :: AsyncIO",
        "Typing :: Typed",
    } <= classifiers, classifiers
    # The oldest Python named is the one requires-python allows.
    assert metadata["Requires-Python"] == ">=3.11"
    assert not any(c.startswith("License ::") for c in classifiers)  # the expression says it


# Imports of the worker's stack fail, as they would where only the base distribution is installed.
_WITHOUT_WORKER_STACK = """
import sys
class Absent:
    # boto3 and idna stay: aws-encryption-sdk and email-validator need them (unpinned).
    blocked = {"aiobotocore", "dynamodb_encryption_sdk", "click", "structlog",
               "pydantic_settings", "prometheus_client", "aiolimiter", "tqdm", "moto"}
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
"""


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
        "import userstore.events as events, userstore.worker.streams.consumer, sys;"
        "import userstore.worker.cli as cli;"
        "from importlib.resources import files;"
        "assert files('userstore.events').joinpath('py.typed').is_file();"
        "assert files('userstore.events').joinpath('schemas/user-event.v1.schema.json').is_file();"
        "print(events.__file__);"
        "sys.argv = ['userstore', '--version']; cli.main()"
    )
    done = _run_from(site, script, tmp_path)
    assert done.returncode == 0, done.stderr
    imported_from, version_line = done.stdout.splitlines()
    assert imported_from.startswith(str(site))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version_line == f"userstore, version {version}"


def _run_from(site: Path, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`script` in a Python that imports only what is installed in `site` (and the stdlib)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(300)
def test_the_publisher_needs_none_of_the_worker_stack(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    publisher = _WITHOUT_WORKER_STACK + (
        "from userstore.events import Publisher, parse_event, serialize\n"
        "from userstore.events.sealing import PayloadSealer\n"
        "print('ok')\n"
    )
    done = _run_from(site, publisher, tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
    # The command, without the worker installed: one line saying what to install.
    command = _WITHOUT_WORKER_STACK + (
        "from userstore.worker.entry import main\nsys.argv = ['userstore', 'run']\nmain()\n"
    )
    done = _run_from(site, command, tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "userstore: the worker is not installed (missing module 'click'); "
        "install it with: pip install 'userstore[worker]'"
    ]
