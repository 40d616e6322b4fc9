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

    Server-side encryption: when its status, type or key differ. Deletion protection: only where
    the definition says, so protection an operator added to another table is left alone.
    """
    updates: list[dict[str, Any]] = []
    sse = create.get("SSESpecification")
    if sse is not None and not _sse_matches(described.get("SSEDescription") or {}, sse):
        updates.append({"SSESpecification": sse})
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
