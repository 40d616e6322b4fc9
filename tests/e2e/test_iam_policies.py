"""The IAM policies in docs/iam/ against what the worker and the publisher really call.

Each runs as its own process behind the recording proxy (tests/faults/proxy.py), in front of
the moto server. Every request seen (action, the resources it named, its KMS encryption context)
must be allowed by the policy; every action and resource of the policy must have been needed by
at least one request. The worker runs twice, in `kms` and in `cached` key mode, each time
through a rotation and with sealed events among the ones it reads; the publisher publishes
plain and sealed events.

The evaluator is deliberately small: Allow statements only; Action and Resource wildcards; the
StringEquals and ForAnyValue:StringEquals operators on KMS encryption context entries, and
ForAnyValue:StringEquals on kms:ResourceAliases (the aliases of the key a request names; a key
named by alias is the key it points to, which is what IAM authorizes). Aliases are read at the
end of a run: by then a rotation has moved the records' alias to the key the policy's ${KeyId}
names, and the payload alias never moves. A condition it cannot evaluate from the request never
allows anything, so it can't hide a gap.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.iam_run import Calls, Run, publisher_calls, worker_calls
from userstore.worker.settings import KeyMode

POLICIES = Path(__file__).resolve().parents[2] / "docs" / "iam"
_SQS_BATCH = {
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "SendMessageBatch": "SendMessage",
}


@dataclass(frozen=True)
class Request:
    action: str
    resources: tuple[str | None, ...]  # ARNs; None: the request does not say (GetRecords)
    context: Mapping[str, str]
    key_aliases: frozenset[str] | None = None  # of the KMS key named; None: no key known
    via_service: str | None = None  # kms:ViaService of a call a service made on our behalf


def requests_of(
    calls: Calls, region: str, account: str, aliases: Mapping[str, str]
) -> list[Request]:
    """`aliases`: alias name -> key ARN."""
    found = []
    for (service, operation), named_sets in calls.items():
        prefix = "dynamodb" if service == "dynamodbstreams" else service
        action = (
            f"{prefix}:{_SQS_BATCH.get(operation, operation) if service == 'sqs' else operation}"
        )
        for named in named_sets or [frozenset()]:
            arns: list[str | None] = []
            context: dict[str, str] = {}
            key_aliases: frozenset[str] | None = None
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
                    # By alias: IAM checks the key it points to. A bare key id: not resolved.
                    arn = aliases.get(value) if value.startswith("alias/") else value
                    if arn is None or not arn.startswith("arn:aws:kms:"):
                        arns.append(None)
                        continue
                    arns.append(arn)
                    key_aliases = frozenset(a for a, target in aliases.items() if target == arn)
                elif kind == "context" and "=" in value:
                    key, _, context_value = value.partition("=")
                    context[key] = context_value
            found.append(Request(action, tuple(arns) or (None,), context, key_aliases))
    return found


# What SQS asks of KMS, with the caller's credentials, per operation on an SSE-KMS queue.
SQS_KMS_ACTIONS = {
    "sqs:SendMessage": ("kms:GenerateDataKey", "kms:Decrypt"),
    "sqs:ReceiveMessage": ("kms:Decrypt",),
}


def on_behalf(
    requests: list[Request],
    region: str,
    queue_keys: Mapping[str, str],
    aliases: Mapping[str, str],
) -> list[Request]:
    """The KMS requests SQS makes for `requests` on AWS (`queue_keys`: queue ARN -> key)."""
    found = []
    for request in requests:
        for queue in request.resources:
            key = queue_keys.get(queue or "")
            if key is None:
                continue
            key = aliases.get(key, key)
            key_aliases = frozenset(a for a, target in aliases.items() if target == key)
            for action in SQS_KMS_ACTIONS.get(request.action, ()):
                found.append(
                    Request(
                        action,
                        (key,),
                        {"aws:sqs:arn": str(queue)},
                        key_aliases,
                        via_service=f"sqs.{region}.amazonaws.com",
                    )
                )
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
            and self._conditions_hold(request)
        )

    def _covers(self, arn: str | None) -> bool:
        return arn is None or any(fnmatch.fnmatchcase(arn, r) for r in self.resources)

    def _conditions_hold(self, request: Request) -> bool:
        for operator, tests in self.conditions.items():
            if operator not in ("StringEquals", "ForAnyValue:StringEquals"):
                return False
            for key, allowed in tests.items():
                if key == "kms:ResourceAliases" and operator.startswith("ForAnyValue:"):
                    if not (request.key_aliases or frozenset()) & set(allowed):
                        return False
                elif key == "kms:ViaService" and operator == "StringEquals":
                    if request.via_service not in allowed:
                        return False
                elif not key.startswith("kms:EncryptionContext:"):
                    return False  # not evaluable from the request: never allows
                elif request.context.get(key.removeprefix("kms:EncryptionContext:")) not in allowed:
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


def check(policy: str, runs: Iterable[Run]) -> None:
    entries: set[tuple[str, str, int]] = set()
    used: set[tuple[str, str, int]] = set()
    for calls, names, aliases, queue_keys in runs:
        statements = load(policy, names)
        requests = requests_of(calls, names["Region"], names["Account"], aliases)
        requests += on_behalf(requests, names["Region"], queue_keys, aliases)
        denied = [r for r in requests if not any(s.allows(r) for s in statements)]
        assert not denied, f"{policy} does not allow: {denied}"
        entries |= {
            (s.sid, action, position)
            for s in statements
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
        "StorageKeyAlias": "alias/s",
    }
    statements = load("worker-policy.json", names)

    def allowed(
        action: str,
        arn: str | None,
        aliases: Iterable[str] = (),
        via: str | None = None,
        **context: str,
    ) -> bool:
        request = Request(action, (arn,), context, frozenset(aliases) if arn else None, via)
        return any(s.allows(request) for s in statements)

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

    payload = "arn:aws:kms:eu-west-2:1:key/payload"
    sealed = {"userstore:purpose": "user-event-data/v1"}
    assert allowed("kms:DescribeKey", payload, ["alias/x"])
    assert allowed("kms:Decrypt", payload, ["alias/other", "alias/x"], **sealed)
    assert not allowed("kms:Decrypt", payload, ["alias/x"])  # no purpose: not a sealed payload
    assert not allowed("kms:Decrypt", payload, ["alias/x"], **{"userstore:purpose": "other"})
    assert not allowed("kms:Decrypt", payload, ["alias/other"], **sealed)
    assert not allowed("kms:Decrypt", None, **sealed)  # which key: unknowable
    assert not allowed("kms:GenerateDataKey", payload, ["alias/x"], **sealed)  # publishers seal
    assert not allowed("kms:DescribeKey", payload, ["alias/other"])

    storage = "arn:aws:kms:eu-west-2:1:key/storage"
    sqs = "sqs.eu-west-2.amazonaws.com"
    queue, dlq = (
        {"aws:sqs:arn": "arn:aws:sqs:eu-west-2:1:q"},
        {"aws:sqs:arn": "arn:aws:sqs:eu-west-2:1:d"},
    )
    assert allowed("kms:Decrypt", storage, ["alias/s"], sqs, **queue)
    assert allowed("kms:GenerateDataKey", storage, ["alias/s"], sqs, **dlq)
    assert not allowed("kms:Decrypt", storage, ["alias/s"], **queue)  # only through SQS
    assert not allowed("kms:Decrypt", storage, ["alias/s"], "dynamodb.eu-west-2.amazonaws.com")
    assert not allowed("kms:GenerateDataKey", storage, ["alias/s"], sqs, **queue)  # never sends
    assert not allowed("kms:Decrypt", storage, ["alias/s"], sqs, **{"aws:sqs:arn": "other"})
    assert not allowed("kms:Decrypt", storage, ["alias/other"], sqs, **queue)

    statements = load("publisher-policy.json", names)
    assert allowed("kms:GenerateDataKey", storage, ["alias/s"], sqs, **queue)
    assert allowed("kms:Decrypt", storage, ["alias/s"], sqs, **queue)
    assert not allowed("kms:GenerateDataKey", storage, ["alias/s"], sqs, **dlq)
    assert not allowed("kms:Decrypt", storage, ["alias/s"], **queue)
    assert allowed("kms:GenerateDataKey", payload, ["alias/x"], **sealed)
    assert not allowed("kms:GenerateDataKey", payload, ["alias/x"], purpose="userstore-email-index")
    assert not allowed("kms:Decrypt", payload, ["alias/x"], **sealed)  # only the worker opens
    assert not allowed("kms:GenerateDataKey", key, **{"*aws-kms-table*": "t"})
