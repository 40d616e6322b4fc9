"""The IAM policies in docs/iam/ against what the worker and the publisher really call.

Each runs as its own process behind the recording proxy (tests/faults/proxy.py), in front of
the moto server. Every request seen (action, the resources it named, its KMS encryption context)
must be allowed by the policy; every action and resource of the policy must have been needed by
at least one request (statements marked pending are for a feature not merged yet). The worker
runs twice, in `kms` and in `cached` key mode, each time through a rotation.

The evaluator is deliberately small: Allow statements only; Action and Resource wildcards; the
StringEquals and ForAnyValue:StringEquals operators. A condition it cannot evaluate from the
request (kms:ResourceAliases) never allows anything, so it can't hide a gap.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.iam_run import Calls, publisher_calls, worker_calls
from worker.settings import KeyMode

pytestmark = pytest.mark.e2e

POLICIES = Path(__file__).resolve().parents[2] / "docs" / "iam"
# Statements for payload sealing, being added in parallel: nothing calls them yet.
PENDING = {"PayloadKeyPendingSealing"}
_SQS_BATCH = {
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "SendMessageBatch": "SendMessage",
}


@dataclass(frozen=True)
class Request:
    action: str
    resources: tuple[str | None, ...]  # ARNs; None: the request does not say (Decrypt, GetRecords)
    context: Mapping[str, str]


def requests_of(calls: Calls, region: str, account: str) -> list[Request]:
    found = []
    for (service, operation), named_sets in calls.items():
        prefix = "dynamodb" if service == "dynamodbstreams" else service
        action = (
            f"{prefix}:{_SQS_BATCH.get(operation, operation) if service == 'sqs' else operation}"
        )
        for named in named_sets or [frozenset()]:
            arns: list[str | None] = []
            context: dict[str, str] = {}
            for item in named:
                kind, _, value = item.partition(":")
                if kind == "table":
                    arns.append(f"arn:aws:dynamodb:{region}:{account}:table/{value}")
                elif kind == "index":
                    table, index = value.split("/", 1)
                    arns.append(f"arn:aws:dynamodb:{region}:{account}:table/{table}/index/{index}")
                elif kind == "stream":
                    arns.append(value)
                elif kind == "queue":
                    arns.append(f"arn:aws:sqs:{region}:{account}:{value.rsplit('/', 1)[-1]}")
                elif kind == "key":
                    # By alias: IAM checks the key it points to, which the request doesn't say.
                    arns.append(value if value.startswith("arn:aws:kms:") else None)
                elif kind == "context" and "=" in value:
                    key, _, context_value = value.partition("=")
                    context[key] = context_value
            found.append(Request(action, tuple(arns) or (None,), context))
    return found


def _substitute(value: str, names: Mapping[str, str]) -> str:
    for name, replacement in names.items():
        value = value.replace("${" + name + "}", replacement)
    assert "${" not in value, f"unknown placeholder in {value}"
    return value


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class Statement:
    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: Mapping[str, Mapping[str, list[str]]]

    def allows_action(self, action: str) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in self.actions)

    def allows(self, request: Request) -> bool:
        return (
            self.allows_action(request.action)
            and all(self._covers(arn) for arn in request.resources)
            and self._conditions_hold(request.context)
        )

    def _covers(self, arn: str | None) -> bool:
        return arn is None or any(fnmatch.fnmatchcase(arn, r) for r in self.resources)

    def _conditions_hold(self, context: Mapping[str, str]) -> bool:
        for operator, tests in self.conditions.items():
            if operator not in ("StringEquals", "ForAnyValue:StringEquals"):
                return False
            for key, allowed in tests.items():
                if not key.startswith("kms:EncryptionContext:"):
                    return False  # not evaluable from the request: never allows
                if context.get(key.removeprefix("kms:EncryptionContext:")) not in allowed:
                    return False
        return True


def load(name: str, names: Mapping[str, str]) -> list[Statement]:
    policy = json.loads((POLICIES / name).read_text())
    assert policy["Version"] == "2012-10-17"
    statements = []
    for raw in policy["Statement"]:
        assert raw["Effect"] == "Allow" and "NotAction" not in raw and "NotResource" not in raw
        statements.append(
            Statement(
                sid=raw["Sid"],
                actions=tuple(_listed(raw["Action"])),
                resources=tuple(_substitute(r, names) for r in _listed(raw["Resource"])),
                conditions={
                    op: {k: [_substitute(v, names) for v in _listed(vs)] for k, vs in tests.items()}
                    for op, tests in raw.get("Condition", {}).items()
                },
            )
        )
    assert len({s.sid for s in statements}) == len(statements)
    return statements


def needed(statements: list[Statement], requests: list[Request]) -> set[tuple[str, str, int]]:
    """(statement, action, resource position) entries some request needed."""
    used = set()
    for request in requests:
        for s in statements:
            if not s.allows(request):
                continue
            for action in s.actions:
                if not fnmatch.fnmatchcase(request.action.lower(), action.lower()):
                    continue
                for position, pattern in enumerate(s.resources):
                    if any(a is None or fnmatch.fnmatchcase(a, pattern) for a in request.resources):
                        used.add((s.sid, action, position))
    return used


def check(policy: str, runs: Iterable[tuple[Calls, Mapping[str, str]]]) -> None:
    entries: set[tuple[str, str, int]] = set()
    used: set[tuple[str, str, int]] = set()
    for calls, names in runs:
        statements = load(policy, names)
        requests = requests_of(calls, names["Region"], names["Account"])
        denied = [r for r in requests if not any(s.allows(r) for s in statements)]
        assert not denied, f"{policy} does not allow: {denied}"
        entries |= {
            (s.sid, action, position)
            for s in statements
            if s.sid not in PENDING
            for action in s.actions
            for position in range(len(s.resources))
        }
        used |= needed(statements, requests)
    assert not entries - used, f"{policy} allows what no request needed: {sorted(entries - used)}"


@pytest.mark.timeout(600)
def test_worker_policy_allows_exactly_what_the_worker_calls(
    moto_endpoint: str, tmp_path: Path
) -> None:
    runs = [worker_calls(moto_endpoint, tmp_path, mode) for mode in (KeyMode.KMS, KeyMode.CACHED)]
    check("worker-policy.json", runs)


@pytest.mark.timeout(300)
def test_publisher_policy_allows_exactly_what_a_publisher_calls(
    moto_endpoint: str, tmp_path: Path
) -> None:
    check("publisher-policy.json", [publisher_calls(moto_endpoint, tmp_path)])


def test_the_evaluator_refuses_what_the_policy_does_not_say() -> None:
    names = {
        "Region": "eu-west-2",
        "Account": "1",
        "Table": "t",
        "MetaTable": "m",
        "StateTable": "s",
        "Queue": "q",
        "DeadLetterQueue": "d",
        "KeyId": "k",
        "PreviousKeyId": "p",
        "PayloadKeyAlias": "alias/x",
    }
    statements = load("worker-policy.json", names)

    def allowed(action: str, arn: str | None, **context: str) -> bool:
        return any(s.allows(Request(action, (arn,), context)) for s in statements)

    table = "arn:aws:dynamodb:eu-west-2:1:table/"
    key = "arn:aws:kms:eu-west-2:1:key/k"
    assert allowed("dynamodb:PutItem", table + "t")
    assert not allowed("dynamodb:DeleteItem", table + "t")  # the worker never deletes a record
    assert not allowed("dynamodb:PutItem", table + "other")
    assert not allowed("dynamodb:Query", table + "t/index/email")  # find --email: operators
    assert not allowed("sqs:SendMessage", "arn:aws:sqs:eu-west-2:1:q")  # only to the DLQ
    assert allowed("kms:Decrypt", key, **{"*aws-kms-table*": "t"})
    assert not allowed("kms:Decrypt", key, **{"*aws-kms-table*": "someone-else"})
    assert not allowed("kms:Decrypt", "arn:aws:kms:eu-west-2:1:key/z", **{"*aws-kms-table*": "t"})
    assert allowed("kms:GenerateDataKey", key, purpose="userstore-email-index", table="t")
    assert not allowed("kms:Decrypt", key, purpose="something-else", table="t")
    assert not allowed("kms:Encrypt", key, **{"*aws-kms-table*": "t"})
    assert not allowed("kms:Decrypt", "arn:aws:kms:eu-west-2:1:key/payload")  # alias unknowable
