"""resources.json: the one resource definition, and that it agrees with the code that uses it."""

from __future__ import annotations

import json

import pytest

from worker.blind_index import INDEX_NAME
from worker.record import EMAIL_INDEX, PARTITION_KEY
from worker.resources import (
    definition,
    fifo_attributes,
    queue_attributes,
    render,
    setting_values,
)
from worker.settings import Settings
from worker.streams.leases import LEASE_TABLE_SPEC


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


def test_every_placeholder_is_a_setting_or_the_dlq_arn() -> None:
    values = {name: f"<{name}>" for name in definition()["defaults"]} | {"dlq_arn": "<arn>"}
    placeholders = [s for s in _strings(definition()) if s.startswith("${")]
    assert len(placeholders) == 10
    rendered = _strings(render(definition(), values))
    assert not [s for s in rendered if s.startswith("${")]
    assert "<arn>" in rendered


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
    assert fifo_attributes("q.fifo") == {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    assert fifo_attributes("q") == {}
