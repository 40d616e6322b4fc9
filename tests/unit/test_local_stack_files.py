"""docker-compose.yml and the Dockerfile, checked as files (no Docker engine runs the tests).

What `docker compose up` relies on: the pinned LocalStack tag, the hook and the resource
definition mounted where the hook looks, the same resource settings (region included, from the
environment with the worker's default) given to the hook and the worker, a worker endpoint the
worker accepts, its probes on a port with a health check on /readyz, and an image that installs
the package and runs `userstore run`, its dependencies in a layer a code change does not rebuild.
"""

from __future__ import annotations

import ast
import asyncio
import re
import shlex
import tomllib
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from tests.harness.emulator import HOOKS_DIR
from userstore.worker.endpoints import check_endpoints
from userstore.worker.metrics import Metrics
from userstore.worker.probes import Readiness, serve
from userstore.worker.resources import definition
from userstore.worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PINNED_LOCALSTACK = "localstack/localstack:4.14.0"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's ${NAME:-default} for the values used here."""
    return re.sub(
        r"\$\{(\w+):-([^}]*)\}", lambda m: shell.get(m.group(1)) or m.group(2), str(value)
    )


def _environment(service: dict[str, Any], shell: dict[str, str]) -> dict[str, str]:
    """The container's environment: a key with no value comes from the shell, or is unset."""
    env = {}
    for name, value in service["environment"].items():
        if value is None:
            if name in shell:
                env[name] = shell[name]
        else:
            env[name] = _interpolate(value, shell)
    return env


def _hook_default_resources_file() -> str:
    source = (HOOKS_DIR / "userstore.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == (
            "DEFAULT_RESOURCES_FILE"
        ):
            return str(ast.literal_eval(node.value))
    raise AssertionError("the hook names no DEFAULT_RESOURCES_FILE")


def test_localstack_is_pinned_to_a_tag_that_starts_without_a_token(
    compose: dict[str, Any],
) -> None:
    localstack = compose["services"]["localstack"]
    assert _interpolate(localstack["image"], {}) == PINNED_LOCALSTACK
    # A newer image with a token: both from the shell (or .env), the token passed through.
    assert _interpolate(localstack["image"], {"LOCALSTACK_IMAGE": "x:latest"}) == "x:latest"
    assert _environment(localstack, {}).get("LOCALSTACK_AUTH_TOKEN") is None
    assert _environment(localstack, {"LOCALSTACK_AUTH_TOKEN": "t"})["LOCALSTACK_AUTH_TOKEN"] == "t"
    assert set(localstack["environment"]["SERVICES"].split(",")) == {
        "sqs",
        "dynamodb",
        "dynamodbstreams",
        "kms",
    }
    assert localstack["ports"] == ["127.0.0.1:4566:4566"]  # loopback only


def test_the_hook_and_the_definition_are_mounted_where_the_hook_looks(
    compose: dict[str, Any],
) -> None:
    localstack = compose["services"]["localstack"]
    mounts = {}
    for volume in localstack["volumes"]:
        source, target, mode = volume.split(":")
        assert mode == "ro"
        assert (ROOT / source).exists(), source
        mounts[target] = (ROOT / source).resolve()
    assert mounts["/etc/localstack/init/ready.d"] == HOOKS_DIR.resolve()
    resources_file = _environment(localstack, {})["USERSTORE_RESOURCES_FILE"]
    assert resources_file == _hook_default_resources_file()
    assert mounts[resources_file] == (ROOT / "worker" / "resources.json").resolve()
    assert "ready" in " ".join(localstack["healthcheck"]["test"])


@pytest.mark.parametrize(
    "shell",
    [{}, {"USERSTORE_TABLE": "mine", "USERSTORE_QUEUE": "q.fifo", "AWS_REGION": "us-east-1"}],
    ids=["unset", "set"],
)
def test_hook_and_worker_get_the_same_resource_settings(
    compose: dict[str, Any], shell: dict[str, str]
) -> None:
    services = compose["services"]
    variables = {f"USERSTORE_{name.upper()}" for name in definition()["defaults"]}
    for name in ("localstack", "worker"):
        declared = set(services[name]["environment"])
        assert variables <= declared, (name, variables - declared)

    def resources(service: str) -> dict[str, str]:
        env = _environment(services[service], shell)
        return {k: v for k, v in env.items() if k in variables or k == "AWS_REGION"}

    assert resources("localstack") == resources("worker")
    assert resources("worker") == {"AWS_REGION": "eu-west-2"} | shell


def test_the_region_comes_from_the_environment_with_the_worker_default(
    compose: dict[str, Any],
) -> None:
    default = Settings.model_fields["aws_region"].default
    for name in ("localstack", "worker"):
        service = compose["services"][name]
        # Not hard-coded: compose's ${AWS_REGION:-default}.
        assert service["environment"]["AWS_REGION"] == f"${{AWS_REGION:-{default}}}", name
        assert _environment(service, {})["AWS_REGION"] == default
        assert _environment(service, {"AWS_REGION": "ap-south-1"})["AWS_REGION"] == "ap-south-1"


def test_the_worker_accepts_its_compose_configuration(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = compose["services"]["worker"]
    assert worker["build"] == "."
    assert worker["depends_on"]["localstack"]["condition"] == "service_healthy"
    env = _environment(worker, {})
    assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    # Plain HTTP off loopback is allowed here, explicitly, and only because of this variable.
    assert settings.allow_insecure_endpoint
    check_endpoints(settings.aws_endpoint_url, env, allow_insecure=True)
    assert settings.table == Settings.model_fields["table"].default


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_installs_the_package_and_runs_the_worker() -> None:
    instructions = _dockerfile()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11")
    copied = {part for op, args in instructions if op == "COPY" for part in shlex.split(args)[:-1]}
    assert {"pyproject.toml", "README.md", "events", "worker"} <= copied
    runs = [args for op, args in instructions if op == "RUN"]
    assert any(
        run.startswith('pip install --no-deps --no-build-isolation ".[worker]"') for run in runs
    ), runs
    entrypoint = next(args for op, args in instructions if op == "ENTRYPOINT")
    command = next(args for op, args in instructions if op == "CMD")
    assert [*ast.literal_eval(entrypoint), *ast.literal_eval(command)] == ["userstore", "run"]
    user = next(args for op, args in instructions if op == "USER")
    assert user not in ("root", "0")
    # The definition ships with the package, where worker/resources.py reads it.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"userstore.worker" = \[[^\]]*"resources.json"', pyproject)


def test_dependencies_are_a_layer_of_their_own_before_the_code() -> None:
    """A code change rebuilds only the layers from the first COPY of code on: those must install
    userstore alone (no dependency, no build backend fetched), offline."""
    instructions = _dockerfile()
    locked = next(
        i
        for i, (op, args) in enumerate(instructions)
        if op == "RUN" and args.startswith("pip install -r requirements/worker.lock")
    )
    # Before it, only the lock is copied in: no code, so no code change reaches that layer.
    copied_before = [
        source
        for op, args in instructions[:locked]
        if op == "COPY"
        for source in shlex.split(args)[:-1]
    ]
    assert copied_before == ["requirements/worker.lock"], copied_before
    code = [
        i
        for i, (op, args) in enumerate(instructions)
        if op == "COPY" and {"events", "worker"} & set(shlex.split(args)[:-1])
    ]
    assert code and min(code) > locked, instructions
    # After the code, pip installs nothing but userstore: no dependency resolution, and the build
    # backend already there (installed with the dependencies) rather than fetched per build.
    after = [args for op, args in instructions[min(code) :] if op == "RUN"]
    installs = [run for run in after if "pip install" in run]
    assert len(installs) == 1, installs
    assert "--no-deps" in installs[0] and "--no-build-isolation" in installs[0], installs
    backend = next(
        Requirement(word.strip("\"'"))
        for word in shlex.split(instructions[locked][1])
        if word.startswith("setuptools")
    )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (wanted,) = [Requirement(r) for r in pyproject["build-system"]["requires"]]
    assert backend.name == wanted.name
    (pinned,) = backend.specifier
    assert pinned.operator == "==" and wanted.specifier.contains(pinned.version), (backend, wanted)
    # The license file setuptools is told to ship (license-files) is in the build context.
    copied = {s for op, a in instructions if op == "COPY" for s in shlex.split(a)[:-1]}
    assert set(pyproject["project"]["license-files"]) <= copied


def test_the_worker_serves_its_probes_and_compose_checks_readyz(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = compose["services"]["worker"]
    env = _environment(worker, {})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    port = settings.metrics_port
    assert port is not None and settings.metrics_host == "0.0.0.0"
    assert worker["ports"] == [f"127.0.0.1:{port}:{port}"]  # loopback only on the host
    check = worker["healthcheck"]
    # Exec form, the image's own Python (the slim image has no curl).
    assert check["test"][:3] == ["CMD", "python", "-c"], check
    code = check["test"][3]
    assert f"http://127.0.0.1:{port}/readyz" in code
    assert {"interval", "timeout", "retries", "start_period"} <= set(check)


async def test_the_health_check_passes_exactly_when_readyz_says_ready(
    compose: dict[str, Any],
) -> None:
    """The compose check's own code, run against the real probes endpoint on a free port."""
    code = compose["services"]["worker"]["healthcheck"]["test"][3]
    receiving = False
    readiness = Readiness(receiving=lambda: receiving)
    async with serve(Metrics(), readiness, "127.0.0.1", 0) as port:
        probe = re.sub(r"127\.0\.0\.1:\d+/", f"127.0.0.1:{port}/", code)

        def healthy() -> bool:
            try:
                exec(probe, {})  # what `python -c` runs in the container
            except urllib.error.HTTPError:
                return False
            return True

        assert not await asyncio.to_thread(healthy)  # starting: 503
        readiness.started = True
        receiving = True
        assert await asyncio.to_thread(healthy)
        readiness.stopping.set()
        assert not await asyncio.to_thread(healthy)  # draining: 503
