"""The one definition of the AWS resources the worker needs (resources.json), and its rendering.

`userstore provision` and the LocalStack ready.d hook (localstack/ready.d/userstore.py) both read
resources.json, so the two can't drift; tests/e2e/test_localstack_hooks.py proves they agree.
Rendering is pure: "${name}" strings become the setting's value, nothing else changes. So are
the decisions about existing resources (what to update on a table, which queue attributes to set):
provision.py carries them out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
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


# What pydantic reads as a bool, so the hook (which has only the environment's text) agrees.
TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})
FALSE_WORDS = frozenset({"0", "off", "f", "false", "n", "no"})


def flag(text: str) -> bool:
    """A rendered flag ("true", or an environment variable's "1", "no", ...) as a bool."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"not a flag: {text!r}")


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def setting_values(settings: Settings) -> dict[str, str]:
    """Every setting the definition refers to, as text (what the AWS APIs take)."""
    return {name: _text(getattr(settings, name)) for name in definition()["defaults"]}


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


def queue_encryption(values: dict[str, str]) -> dict[str, str]:
    """The encryption attributes both queues get (values: with storage_key_arn)."""
    modes: dict[str, Any] = definition()["queue_encryption"]
    return queue_attributes({"Attributes": render(modes[values["queue_encryption"]], values)})


def queue_policy(queue_arn: str) -> str:
    """The queue's access policy (deny any request not made over TLS), as SQS takes it."""
    return json.dumps(render(definition()["queue_policy"], {"queue_arn": queue_arn}))


def clear_other_encryption(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str]:
    """What to set first when a queue under SSE-KMS moves to SSE-SQS (empty: nothing).

    SQS refuses both kinds at once; clearing the KMS key falls back to SSE-SQS on AWS, so no
    message is ever stored unencrypted on the way.
    """
    if current.get("KmsMasterKeyId") and "KmsMasterKeyId" not in wanted:
        return {"KmsMasterKeyId": ""}
    return {}


def table_updates(described: Mapping[str, Any], create: Mapping[str, Any]) -> list[dict[str, Any]]:
    """update_table arguments (one call each) that bring a described table in line with `create`.

    Server-side encryption: when its status, type or key differ. The stream: when it is off.
    Deletion protection: only where
    the definition says, so protection an operator added to another table is left alone.
    """
    updates: list[dict[str, Any]] = []
    sse = create.get("SSESpecification")
    if sse is not None and not _sse_matches(described.get("SSEDescription") or {}, sse):
        updates.append({"SSESpecification": sse})
    stream = create.get("StreamSpecification")
    if stream and not (described.get("StreamSpecification") or {}).get("StreamEnabled"):
        updates.append({"StreamSpecification": stream})  # off: turned on (a view type: reported)
    if "DeletionProtectionEnabled" in create:
        wanted = bool(create["DeletionProtectionEnabled"])
        if bool(described.get("DeletionProtectionEnabled", False)) != wanted:
            updates.append({"DeletionProtectionEnabled": wanted})
    return updates


def _sse_matches(description: Mapping[str, Any], sse: Mapping[str, Any]) -> bool:
    enabled = description.get("Status") in ("ENABLED", "UPDATING")
    if not sse.get("Enabled"):
        return not enabled  # DynamoDB's own (AWS owned key) encryption: no description
    return (
        enabled
        and description.get("SSEType") == sse.get("SSEType", "KMS")
        and description.get("KMSMasterKeyArn") == sse.get("KMSMasterKeyId")
    )


def point_in_time_recovery_status(described: Mapping[str, Any]) -> bool:
    """Whether describe_continuous_backups' answer says point-in-time recovery is on."""
    pitr = described.get("ContinuousBackupsDescription", {}).get(
        "PointInTimeRecoveryDescription", {}
    )
    return bool(pitr.get("PointInTimeRecoveryStatus") == "ENABLED")


# --- what provision changes on an existing resource, and what it can only report -------------


@dataclass(frozen=True)
class Mismatch:
    """A setting of an existing resource that differs and can't be changed in place.

    Names and settings only: none of these ever holds a record's or an event's value.
    """

    attribute: str
    expected: str
    found: str
    remedy: str = ""


# Queue attributes whose value is JSON text: compared as data, not as text.
JSON_QUEUE_ATTRIBUTES = frozenset({"Policy", "RedrivePolicy", "RedriveAllowPolicy"})


def fixed_queue_attributes() -> frozenset[str]:
    """Attributes SQS sets at creation and never changes (FifoQueue)."""
    return frozenset(definition()["fixed_queue_attributes"])


def _as_text(node: Any) -> Any:
    """JSON data with every scalar as text: SQS reads back "5" as 5 in a redrive policy."""
    if isinstance(node, dict):
        return {key: _as_text(value) for key, value in node.items()}
    if isinstance(node, list):
        return sorted((_as_text(value) for value in node), key=json.dumps)
    return _text(node)


def _same(name: str, wanted: str, found: str | None) -> bool:
    if found is None:
        return wanted == ""  # a cleared attribute (KmsMasterKeyId) is read back absent
    if name in JSON_QUEUE_ATTRIBUTES and wanted and found:
        try:
            return bool(_as_text(json.loads(wanted)) == _as_text(json.loads(found)))
        except ValueError:
            return False
    return wanted == found


@dataclass(frozen=True)
class QueueChanges:
    """What set_queue_attributes must set, and what SQS won't change (name -> mismatch)."""

    to_set: dict[str, str]
    fixed: list[Mismatch]


def queue_changes(current: Mapping[str, str], wanted: Mapping[str, str]) -> QueueChanges:
    """Bring a queue's `current` attributes (get_queue_attributes "All") to `wanted`."""
    fixed_names = fixed_queue_attributes()
    to_set: dict[str, str] = {}
    fixed: list[Mismatch] = []
    for name, value in wanted.items():
        if _same(name, value, current.get(name)):
            continue
        if name in fixed_names:
            remedy = "SQS fixes it at creation: delete the queue and provision again"
            fixed.append(Mismatch(name, value, current.get(name, "(absent)"), remedy))
        else:
            to_set[name] = value
    return QueueChanges(to_set, fixed)


def merged_policy(current: str | None, queue_arn: str) -> str:
    """The queue's policy with our statement(s) in it and every other statement kept.

    An operator's grants (EventBridge or SNS may send, docs/serverless.md) survive provision;
    a statement with one of our Sids is ours, replaced. An unreadable policy is replaced whole.
    """
    ours: dict[str, Any] = render(definition()["queue_policy"], {"queue_arn": queue_arn})
    sids = {statement.get("Sid") for statement in ours["Statement"]}
    try:
        existing = json.loads(current) if current else {}
    except ValueError:
        existing = {}
    statements = existing.get("Statement", []) if isinstance(existing, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    kept = [s for s in statements if isinstance(s, dict) and s.get("Sid") not in sids]
    return json.dumps(ours | {"Statement": [*ours["Statement"], *kept]})


def _keys(schema: Any) -> str:
    return ", ".join(f"{k['AttributeName']} {k['KeyType']}" for k in schema or [])


def table_mismatches(described: Mapping[str, Any], create: Mapping[str, Any]) -> list[Mismatch]:
    """What differs on a described table and DynamoDB can't change in place."""
    found: list[Mismatch] = []
    if _keys(described.get("KeySchema")) != _keys(create["KeySchema"]):
        found.append(
            Mismatch(
                "KeySchema",
                _keys(create["KeySchema"]),
                _keys(described.get("KeySchema")),
                "a table's key is fixed: use another table name or recreate the table",
            )
        )
    indexes = {i["IndexName"]: i for i in described.get("GlobalSecondaryIndexes", [])}
    for index in create.get("GlobalSecondaryIndexes", []):
        present = indexes.get(index["IndexName"])
        if present is None:
            continue  # missing: provision adds it
        wanted_type = index["Projection"]["ProjectionType"]
        found_type = present.get("Projection", {}).get("ProjectionType", "")
        for attribute, expected, got in (
            ("KeySchema", _keys(index["KeySchema"]), _keys(present.get("KeySchema"))),
            ("Projection", wanted_type, found_type),
        ):
            if expected != got:
                found.append(
                    Mismatch(
                        f"index {index['IndexName']} {attribute}",
                        expected,
                        got,
                        "an index's keys and projection are fixed: delete the index, then"
                        " provision again (it is rebuilt online)",
                    )
                )
    stream = create.get("StreamSpecification")
    current = described.get("StreamSpecification") or {}
    if (
        stream
        and current.get("StreamEnabled")
        and (current.get("StreamViewType") != stream["StreamViewType"])
    ):
        found.append(
            Mismatch(
                "StreamViewType",
                stream["StreamViewType"],
                str(current.get("StreamViewType")),
                "DynamoDB can't change it in place: disable the stream (update-table"
                " --stream-specification StreamEnabled=false), then provision again",
            )
        )
    return found


class TimeToLive(Enum):
    IN_LINE = "in line"
    ENABLE = "enable"


def time_to_live(description: Mapping[str, Any], attribute: str) -> TimeToLive | Mismatch:
    """What to do about a table's time to live (describe_time_to_live's TimeToLiveDescription)."""
    status = description.get("TimeToLiveStatus", "DISABLED")
    found = description.get("AttributeName", "")
    if status == "DISABLED":
        return TimeToLive.ENABLE
    if status in ("ENABLED", "ENABLING") and found == attribute:
        return TimeToLive.IN_LINE
    if status == "DISABLING":
        remedy = "being disabled: run provision again once it is DISABLED"
    else:
        remedy = "DynamoDB keeps one TTL attribute: disable it, then provision again (AWS allows"
        remedy += " re-enabling an hour later)"
    return Mismatch("TimeToLive", f"ENABLED on {attribute}", f"{status} on {found or '-'}", remedy)


def key_mismatches(metadata: Mapping[str, Any], create: Mapping[str, Any]) -> list[Mismatch]:
    """What differs on an existing KMS key (describe_key's KeyMetadata); nothing is changed."""
    found: list[Mismatch] = []
    for name in ("KeyUsage", "KeySpec"):
        if name in create and metadata.get(name, create[name]) != create[name]:
            remedy = "fixed when a key is created: point the alias at a key made for this use"
            found.append(Mismatch(name, str(create[name]), str(metadata.get(name)), remedy))
    state = metadata.get("KeyState", "Enabled")
    if state != "Enabled":
        remedy = "enable the key (aws kms enable-key), or point the alias at an enabled key"
        found.append(Mismatch("KeyState", "Enabled", str(state), remedy))
    return found
