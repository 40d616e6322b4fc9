from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness.emulator import (
    E2E_DIR,
    ministack_process,
    moto_bound_e2e,
    moto_server_process,
    run_hooks,
    selected_emulator,
)
from tests.harness.external import ACCOUNT_VAR, external_run, external_target
from tests.harness.settings import make_settings, provision_settings
from tests.reliability.scenario import scenario
from userstore.worker.settings import KeyMode, Settings

# Tests never reach real AWS: dummy credentials, a fixed region, endpoints given explicitly. The
# one exception, named explicitly, is the e2e tier on an AWS sandbox account (USERSTORE_TEST_AWS_
# ACCOUNT, tests/harness/external.py): it keeps the caller's credentials.
os.environ.update(AWS_DEFAULT_REGION="eu-west-2", AWS_REGION="eu-west-2")
if not os.environ.get(ACCOUNT_VAR):
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
for _name in list(os.environ):
    # USERSTORE_TEST_* choose the emulator (tests/harness/emulator.py): not worker settings.
    if _name.startswith(("USERSTORE_", "AWS_ENDPOINT_URL")) and not _name.startswith(
        "USERSTORE_TEST_"
    ):
        del os.environ[_name]


# Folders are tiers: tests/harness/tiers.py marks every test with its first folder under tests/.
pytest_plugins = ["tests.harness.tiers"]

_DESELECTED_E2E = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server_process() as url:
        yield url


@pytest.fixture(scope="session")
def aws_endpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The e2e tier's emulator: moto server, or ministack with USERSTORE_TEST_EMULATOR=ministack.

    Either way the localstack/ready.d hooks have provisioned the default resource names (ministack
    runs them itself at start; for moto the harness runs them), as `docker compose up` does.
    With USERSTORE_TEST_ENDPOINT or USERSTORE_TEST_AWS_ACCOUNT, no emulator is started: the
    endpoint it names (None: real AWS), and the run's resources removed at the end
    (tests/harness/external.py).
    """
    target = external_target()
    if target is not None:
        with external_run(target) as endpoint:
            yield endpoint  # type: ignore[misc]
        return
    if selected_emulator() == "ministack":
        log = tmp_path_factory.mktemp("ministack") / "ministack.log"
        with ministack_process(log) as url:
            yield url
    else:
        url = request.getfixturevalue("moto_endpoint")
        run_hooks(url)
        yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse e2e tests bound to moto; on ministack, run only the tests that use the emulator
    (the others don't touch it)."""
    bound = moto_bound_e2e((i.nodeid, getattr(i, "fixturenames", ())) for i in items)
    if bound:
        # On either emulator, so a moto-only e2e test fails the run where it is written.
        raise pytest.UsageError(
            "e2e tests must take `aws_endpoint` (moto or ministack), not `moto_endpoint`:\n  "
            + "\n  ".join(bound)
            + "\n(a module that truly can't run on ministack goes in tests/harness/emulator.py's"
            " MOTO_ONLY_E2E, with the reason)"
        )
    if selected_emulator() != "ministack":
        return
    uses = ["aws_endpoint" in getattr(item, "fixturenames", ()) for item in items]
    unused = [i for i, use in zip(items, uses, strict=True) if not use]
    config.hook.pytest_deselected(items=unused)
    items[:] = [i for i, use in zip(items, uses, strict=True) if use]
    config.stash[_DESELECTED_E2E] = [i.nodeid for i in unused if i.nodeid.startswith(E2E_DIR)]


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    """Name the e2e tests left out on ministack, so none drops out unseen."""
    left_out = config.stash.get(_DESELECTED_E2E, [])
    if not left_out:
        return []
    return [f"ministack: {len(left_out)} e2e tests don't take aws_endpoint, deselected:"] + [
        f"  {node_id}" for node_id in left_out
    ]


@pytest.fixture(params=[KeyMode.KMS, KeyMode.CACHED], ids=["kms", "cached"])
def key_mode(request: pytest.FixtureRequest) -> KeyMode:
    return KeyMode(request.param)


@pytest.fixture
async def provisioned_settings(moto_endpoint: str, key_mode: KeyMode) -> Settings:
    return await provision_settings(make_settings(moto_endpoint, key_mode))


# the reliability report's fixture, available to every test; the settings helpers live in
# tests/harness/settings.py (imported here for the fixtures)
__all__ = ["make_settings", "provision_settings", "scenario"]
