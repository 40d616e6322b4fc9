"""The e2e tier against an endpoint it did not start: a LocalStack (`docker compose up localstack`),
any emulator already running, or a real AWS sandbox account.

    USERSTORE_TEST_ENDPOINT=http://localhost:4566 ./dev test tests/e2e
    USERSTORE_TEST_AWS_ACCOUNT=111122223333 USERSTORE_TEST_PREFIX=alice ./dev test tests/e2e

Every resource the harness names (tests/harness/settings.py) starts with a run prefix: the named
prefix (USERSTORE_TEST_PREFIX, default `e2e`), then a random run id. When the run ends,
`remove_run_resources` deletes by that prefix: tables, queues, aliases, and schedules for deletion
the KMS keys they point at plus keys made during the run that no alias names any more (rotated
away). Real AWS is refused unless both the account id and the prefix were named, and the
credentials really are for that account (sts get-caller-identity). With none of these variables
set, nothing here changes anything.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

ENDPOINT_VAR = "USERSTORE_TEST_ENDPOINT"
ACCOUNT_VAR = "USERSTORE_TEST_AWS_ACCOUNT"
PREFIX_VAR = "USERSTORE_TEST_PREFIX"
DEFAULT_PREFIX = "e2e"
# Short enough that the longest harness name (a FIFO dead-letter queue) stays under SQS's 80
# characters; lower case, digits and hyphens are valid in table, queue and alias names alike.
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,23}")
# KMS's shortest pending window: a key scheduled by mistake can be recovered for 7 days.
KEY_PENDING_DAYS = 7

# e2e tests that can't run against an endpoint the harness did not start, each with why. Keys are
# node ids without parameters (`path::function`).
EXTERNAL_SKIPS: Mapping[str, str] = {
    "tests/e2e/test_localstack_hooks.py::test_the_selected_emulator_is_the_one_serving": (
        "asks the harness-started emulator's own API (/moto-api/, /_ministack/health)"
    ),
    "tests/e2e/test_localstack_hooks.py::test_hook_defaults_match_userstore_provision": (
        "names its resources itself (hook-*), outside the run prefix, so the run could not remove"
        " them; and compares with the ready.d hook's default names, which only an emulator has"
    ),
    "tests/e2e/test_localstack_hooks.py::test_hook_reads_the_worker_settings_variables": (
        "names its resources itself (hook-*), outside the run prefix, so the run could not remove"
        " them"
    ),
    "tests/e2e/test_localstack_hooks.py::"
    "test_provision_puts_a_tables_encryption_back_under_the_storage_key": (
        "names its resources itself (hook-*), outside the run prefix, so the run could not remove"
        " them"
    ),
    "tests/e2e/test_localstack_hooks.py::test_worker_runs_on_the_hook_provisioned_defaults": (
        "writes to the ready.d hook's default resources, which the run did not create and must"
        " not touch"
    ),
    "tests/e2e/test_operations.py::test_readiness_drops_while_draining_after_sigterm": (
        "needs fault injection: slow DynamoDB calls through the fault proxy"
    ),
}


class Refused(Exception):
    """The external target was not named explicitly enough to run against it."""


@dataclass(frozen=True)
class ExternalTarget:
    """Where the e2e tier runs when the harness starts no emulator. `endpoint` None: real AWS."""

    endpoint: str | None
    account: str | None
    prefix: str  # as named
    run_id: str

    @property
    def run_prefix(self) -> str:
        return f"{self.prefix}-{self.run_id}-"

    def describe(self) -> str:
        where = self.endpoint or f"AWS account {self.account}"
        if self.endpoint and self.account:
            where += f" (account {self.account})"
        return f"external target {where}, resource names start with {self.run_prefix}"


def parse_target(env: Mapping[str, str], run_id: str) -> ExternalTarget | None:
    """The target the variables name, None when they name none; Refused when they are not
    explicit enough. Real AWS (no endpoint) needs both the account id and the prefix."""
    endpoint = env.get(ENDPOINT_VAR, "").strip() or None
    account = env.get(ACCOUNT_VAR, "").strip() or None
    prefix = env.get(PREFIX_VAR, "").strip() or None
    if endpoint is None and account is None:
        if prefix is not None:
            raise Refused(
                f"{PREFIX_VAR} is set but neither {ENDPOINT_VAR} nor {ACCOUNT_VAR}: name the"
                " endpoint or the AWS account to run against"
            )
        return None
    if endpoint is None and prefix is None:
        raise Refused(
            f"{ACCOUNT_VAR} is set but {PREFIX_VAR} is not: against real AWS, name the prefix"
            " every resource of the run will carry (and be removed by)"
        )
    if account is not None and not re.fullmatch(r"\d{12}", account):
        raise Refused(f"{ACCOUNT_VAR} must be a 12-digit AWS account id")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise Refused(f"{ENDPOINT_VAR} must be a URL with its scheme, e.g. http://localhost:4566")
    prefix = prefix or DEFAULT_PREFIX
    if not PREFIX_PATTERN.fullmatch(prefix) or prefix.startswith("aws"):
        raise Refused(
            f"{PREFIX_VAR} must be 1-24 lower-case letters, digits or hyphens, starting with a"
            " letter, and not `aws`"
        )
    return ExternalTarget(endpoint, account, prefix, run_id)


def check_account(target: ExternalTarget, sts: Any) -> None:
    """Refuse unless the credentials in use belong to the account that was named."""
    if target.account is None:
        return
    found = str(sts.get_caller_identity()["Account"])
    if found != target.account:
        raise Refused(
            f"the credentials are for AWS account {found}, not {target.account} ({ACCOUNT_VAR}):"
            " refusing to create or delete anything there"
        )


@cache
def external_target() -> ExternalTarget | None:
    """This process's target (one run id per process: each pytest worker cleans up its own)."""
    return parse_target(os.environ, secrets.token_hex(3))


def run_prefix() -> str:
    """What every harness-named resource starts with: "" when the harness runs the emulator."""
    target = external_target()
    return target.run_prefix if target is not None else ""


def clients_for(target: ExternalTarget) -> dict[str, Any]:
    """boto3 clients on the target, by service name."""
    import boto3

    session = boto3.session.Session(region_name="eu-west-2")  # the region the tests name
    return {
        name: session.client(name, endpoint_url=target.endpoint)
        for name in ("dynamodb", "sqs", "kms", "sts")
    }


@dataclass
class Removed:
    """What `remove_run_resources` removed, by name (keys by id)."""

    tables: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "tables": self.tables,
            "queues": self.queues,
            "aliases": self.aliases,
            "keys": self.keys,
        }


def remove_run_resources(
    prefix: str, clients: Mapping[str, Any], started: datetime | None = None
) -> Removed:
    """Delete every table, queue and alias whose name starts with `prefix`; schedule for deletion
    the keys those aliases point at and, if `started` is given, the customer keys created since
    then that no alias names (a rotation moved the run's alias off them)."""
    if not prefix:
        raise ValueError("refusing to remove resources by an empty prefix")
    removed = Removed()
    ddb, sqs, kms = clients["dynamodb"], clients["sqs"], clients["kms"]
    for name in paged(ddb, "list_tables", "TableNames"):
        if name.startswith(prefix):
            if ddb.describe_table(TableName=name)["Table"].get("DeletionProtectionEnabled"):
                ddb.update_table(TableName=name, DeletionProtectionEnabled=False)
            ddb.delete_table(TableName=name)
            removed.tables.append(name)
    for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
        sqs.delete_queue(QueueUrl=url)
        removed.queues.append(url.rsplit("/", 1)[-1])
    doomed: set[str] = set()
    aliased: set[str] = set()
    for alias in paged(kms, "list_aliases", "Aliases"):
        target = alias.get("TargetKeyId")
        if alias["AliasName"].startswith(f"alias/{prefix}"):
            kms.delete_alias(AliasName=alias["AliasName"])
            removed.aliases.append(alias["AliasName"])
            if target:
                doomed.add(target)
        elif target:
            aliased.add(target)
    if started is not None:
        for key in paged(kms, "list_keys", "Keys"):
            meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
            if (
                meta.get("KeyManager") == "CUSTOMER"
                and meta["CreationDate"] >= started
                and meta["KeyId"] not in aliased
                and meta.get("KeyState") in ("Enabled", "Disabled")
            ):
                doomed.add(meta["KeyId"])
    for key_id in sorted(doomed - aliased):
        state = kms.describe_key(KeyId=key_id)["KeyMetadata"].get("KeyState")
        if state in ("Enabled", "Disabled"):
            kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=KEY_PENDING_DAYS)
            removed.keys.append(key_id)
    return removed


CLEANUP_LOG_VAR = "USERSTORE_TEST_CLEANUP_LOG"


@contextmanager
def external_run(target: ExternalTarget) -> Iterator[str | None]:
    """The target's endpoint for the session; on the way out, everything under the run prefix
    removed (and, with USERSTORE_TEST_CLEANUP_LOG set, what was removed appended to that file as
    one JSON line)."""
    clients = clients_for(target)
    check_account(target, clients["sts"])
    # Keys made since now with no alias left are the run's: but under pytest-xdist another
    # worker's test may still need its unaliased key, so there only aliased keys are removed.
    started = None if os.environ.get("PYTEST_XDIST_WORKER") else datetime.now(UTC)
    try:
        yield target.endpoint
    finally:
        removed = remove_run_resources(target.run_prefix, clients, started)
        log = os.environ.get(CLEANUP_LOG_VAR)
        if log:
            with open(log, "a", encoding="utf-8") as out:
                entry = {"run_prefix": target.run_prefix, **removed.as_dict()}
                out.write(json.dumps(entry) + "\n")


def paged(client: Any, operation: str, field_name: str) -> Iterator[Any]:
    """Every item of a paginated boto3 listing."""
    for page in client.get_paginator(operation).paginate():
        yield from page.get(field_name, [])
