"""resources.json: the one resource definition, and that it agrees with the code that uses it."""

from __future__ import annotations

import ast
import json
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from tests.harness.emulator import HOOKS_DIR
from userstore.worker.blind_index import INDEX_NAME
from userstore.worker.record import EMAIL_INDEX, PARTITION_KEY
from userstore.worker.resources import (
    FALSE_WORDS,
    TRUE_WORDS,
    clear_other_encryption,
    definition,
    fifo_attributes,
    flag,
    point_in_time_recovery_status,
    queue_attributes,
    queue_encryption,
    queue_policy,
    render,
    setting_values,
    table_updates,
)
from userstore.worker.settings import QueueEncryption, Settings
from userstore.worker.streams.leases import LEASE_TABLE_SPEC


def test_each_default_equals_the_field_default() -> None:
    # The hook has no worker package to import: it takes its defaults from the definition.
    fields = Settings.model_fields
    defaults = definition()["defaults"]
    assert set(defaults) == {
        "table",
        "meta_table",
        "state_table",
        "queue",
        "dlq",
        "kms_key",
        "payload_kms_key",
        "storage_kms_key",
        "queue_encryption",
        "point_in_time_recovery",
        "visibility_timeout_s",
        "max_receive_count",
    }
    for name, value in defaults.items():
        assert value == fields[name].default, name


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def test_every_placeholder_is_a_setting_or_an_arn_known_once_it_exists() -> None:
    arns = {"dlq_arn": "<arn>", "storage_key_arn": "<key>", "queue_arn": "<self>"}
    values = {name: f"<{name}>" for name in definition()["defaults"]} | arns
    placeholders = [s for s in _strings(definition()) if s.startswith("${")]
    assert len(placeholders) == 19
    rendered = _strings(render(definition(), values))
    assert not [s for s in rendered if s.startswith("${")]
    assert {"<arn>", "<key>", "<self>"} <= set(rendered)


def test_every_table_is_encrypted_under_the_storage_key() -> None:
    keys = {k["role"]: k for k in definition()["keys"]}
    assert keys["storage"]["alias"] == "${storage_kms_key}"
    assert keys["storage"]["create"]["KeySpec"] == "SYMMETRIC_DEFAULT"
    for table in definition()["tables"]:
        assert table["SSESpecification"] == {
            "Enabled": True,
            "SSEType": "KMS",
            "KMSMasterKeyId": "${storage_key_arn}",
        }, table["role"]
        assert table["point_in_time_recovery"] == "${point_in_time_recovery}"
    protected = [t["role"] for t in definition()["tables"] if t.get("DeletionProtectionEnabled")]
    assert protected == ["users"]


def test_tables_agree_with_the_code_that_reads_them() -> None:
    tables = {t["role"]: t for t in definition()["tables"]}
    users = tables["users"]
    assert users["KeySchema"] == [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}]
    [index] = users["GlobalSecondaryIndexes"]
    assert index["IndexName"] == INDEX_NAME
    assert index["KeySchema"] == [{"AttributeName": EMAIL_INDEX, "KeyType": "HASH"}]
    assert users["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert users["ttl_attribute"] == "expires_at"
    state = tables["state"]
    assert {k: state[k] for k in LEASE_TABLE_SPEC} == LEASE_TABLE_SPEC
    # The dynamodb-encryption-sdk MetaStore schema: material name (S) and version (N).
    assert tables["materials"]["KeySchema"] == [
        {"AttributeName": "N", "KeyType": "HASH"},
        {"AttributeName": "V", "KeyType": "RANGE"},
    ]
    assert [t["TableName"] for t in definition()["tables"]] == [
        "${table}",
        "${meta_table}",
        "${state_table}",
    ]


def test_render_substitutes_settings_and_leaves_the_rest() -> None:
    settings = Settings(table="t1", queue="q.fifo", dlq="d.fifo", visibility_timeout_s=7)
    values = setting_values(settings)
    assert values["table"] == "t1"
    assert values["visibility_timeout_s"] == "7"
    node = {"a": ["${table}", "x${table}", 3, True], "b": {"c": "${queue}"}}
    assert render(node, values) == {"a": ["t1", "x${table}", 3, True], "b": {"c": "q.fifo"}}
    with pytest.raises(KeyError):
        render("${nope}", values)


def test_queue_attributes_as_sqs_takes_them() -> None:
    queue = render(
        definition()["queue"],
        setting_values(Settings(max_receive_count=4, visibility_timeout_s=9)) | {"dlq_arn": "arn"},
    )
    attributes = queue_attributes(queue)
    assert attributes["VisibilityTimeout"] == "9"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": "arn",
        "maxReceiveCount": "4",
    }
    assert fifo_attributes("q.fifo") == {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    assert fifo_attributes("q") == {}


@pytest.mark.parametrize("word", sorted(TRUE_WORDS | FALSE_WORDS | {"TRUE", " No ", "maybe", ""}))
def test_flag_reads_what_pydantic_reads(word: str) -> None:
    # The hook has only the environment's text: it must read a flag as the worker's settings do.
    try:
        expected: bool | None = TypeAdapter(bool).validate_python(word.strip())
    except ValidationError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError, match="not a flag"):
            flag(word)
    else:
        assert flag(word) is expected


def test_flags_render_as_true_or_false() -> None:
    assert setting_values(Settings())["point_in_time_recovery"] == "true"
    assert setting_values(Settings(point_in_time_recovery=False))["point_in_time_recovery"] == (
        "false"
    )
    assert setting_values(Settings(queue_encryption=QueueEncryption.SQS))["queue_encryption"] == (
        "sqs"
    )


def _hook_constant(name: str) -> Any:
    for node in ast.parse((HOOKS_DIR / "userstore.py").read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == name:
            call = node.value
            assert isinstance(call, ast.Call)  # frozenset({...})
            return frozenset(ast.literal_eval(call.args[0]))
    raise AssertionError(f"the hook names no {name}")


def test_the_hook_reads_flags_with_the_same_words() -> None:
    assert _hook_constant("TRUE_WORDS") == TRUE_WORDS
    assert _hook_constant("FALSE_WORDS") == FALSE_WORDS


def test_queue_encryption_per_setting() -> None:
    key = "arn:aws:kms:eu-west-2:1:key/k"
    kms = queue_encryption(setting_values(Settings()) | {"storage_key_arn": key})
    assert kms == {
        "KmsMasterKeyId": key,
        "KmsDataKeyReusePeriodSeconds": "300",
        "SqsManagedSseEnabled": "false",
    }
    sqs = queue_encryption(
        setting_values(Settings(queue_encryption=QueueEncryption.SQS)) | {"storage_key_arn": key}
    )
    assert sqs == {"SqsManagedSseEnabled": "true"}
    assert set(definition()["queue_encryption"]) == {mode.value for mode in QueueEncryption}


def test_the_queue_policy_denies_anything_but_tls_on_the_queue_itself() -> None:
    policy = json.loads(queue_policy("arn:aws:sqs:eu-west-2:1:q"))
    [statement] = policy["Statement"]
    assert statement == {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "sqs:*",
        "Resource": "arn:aws:sqs:eu-west-2:1:q",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


@pytest.mark.parametrize(
    ("current", "wanted", "first"),
    [
        ({"KmsMasterKeyId": "arn:k"}, {"SqsManagedSseEnabled": "true"}, {"KmsMasterKeyId": ""}),
        ({"KmsMasterKeyId": "arn:k"}, {"KmsMasterKeyId": "arn:other"}, {}),
        ({"KmsMasterKeyId": ""}, {"SqsManagedSseEnabled": "true"}, {}),
        ({}, {"SqsManagedSseEnabled": "true"}, {}),
        ({}, {"KmsMasterKeyId": "arn:k"}, {}),
    ],
    ids=["kms-to-sqs", "kms-to-other-key", "cleared", "sqs-stays", "sqs-to-kms"],
)
def test_moving_a_queue_off_sse_kms_clears_the_key_first(
    current: dict[str, str], wanted: dict[str, str], first: dict[str, str]
) -> None:
    assert clear_other_encryption(current, wanted) == first


KEY = "arn:aws:kms:eu-west-2:1:key/storage"
SSE = {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY}


def _sse(key: str = KEY, status: str = "ENABLED") -> dict[str, Any]:
    return {"SSEDescription": {"Status": status, "SSEType": "KMS", "KMSMasterKeyArn": key}}


@pytest.mark.parametrize(
    ("described", "create", "updates"),
    [
        (_sse(), {"SSESpecification": SSE}, []),
        (_sse(status="UPDATING"), {"SSESpecification": SSE}, []),
        ({}, {"SSESpecification": SSE}, [{"SSESpecification": SSE}]),
        (_sse("arn:other"), {"SSESpecification": SSE}, [{"SSESpecification": SSE}]),
        (_sse(status="DISABLED"), {"SSESpecification": SSE}, [{"SSESpecification": SSE}]),
        (
            {"DeletionProtectionEnabled": False},
            {"SSESpecification": SSE, "DeletionProtectionEnabled": True},
            [{"SSESpecification": SSE}, {"DeletionProtectionEnabled": True}],
        ),
        ({"DeletionProtectionEnabled": True} | _sse(), {"DeletionProtectionEnabled": True}, []),
        # Protection an operator added to a table the definition doesn't protect: left alone.
        ({"DeletionProtectionEnabled": True}, {}, []),
    ],
    ids=[
        "in-line",
        "sse-updating",
        "default-encryption",
        "other-key",
        "sse-disabled",
        "both-differ",
        "protected",
        "protection-not-ours",
    ],
)
def test_table_updates(
    described: dict[str, Any], create: dict[str, Any], updates: list[dict[str, Any]]
) -> None:
    assert table_updates(described, create) == updates


@pytest.mark.parametrize(
    ("status", "enabled"), [("ENABLED", True), ("DISABLED", False), (None, False)]
)
def test_point_in_time_recovery_status(status: str | None, enabled: bool) -> None:
    pitr = {} if status is None else {"PointInTimeRecoveryStatus": status}
    described = {"ContinuousBackupsDescription": {"PointInTimeRecoveryDescription": pitr}}
    assert point_in_time_recovery_status(described) is enabled
