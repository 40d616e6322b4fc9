"""The pure decisions behind `provision` on resources that exist (resources.py), and its report
(provision_report.py): which queue attributes to set, what to report, the policy merge."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.settings import make_settings
from userstore.worker.cli_errors import ExitCode
from userstore.worker.errors import Misconfigured
from userstore.worker.provision import provision
from userstore.worker.provision_report import EXIT_DIFFERS, Outcome, ProvisionReport
from userstore.worker.resources import (
    Mismatch,
    TimeToLive,
    key_mismatches,
    merged_policy,
    queue_changes,
    queue_policy,
    table_mismatches,
    table_updates,
    time_to_live,
)

ARN = "arn:aws:sqs:eu-west-2:1:q.fifo"
REDRIVE = json.dumps({"deadLetterTargetArn": "arn:dlq", "maxReceiveCount": "5"})


def test_queue_attributes_read_back_in_sqs_own_form_are_not_set_again() -> None:
    wanted = {"VisibilityTimeout": "60", "RedrivePolicy": REDRIVE, "KmsMasterKeyId": ""}
    current = {
        "VisibilityTimeout": "60",
        # SQS answers maxReceiveCount as a number, and its own spacing.
        "RedrivePolicy": '{"maxReceiveCount":5,"deadLetterTargetArn":"arn:dlq"}',
    }
    assert queue_changes(current, wanted).to_set == {}


def test_differing_queue_attributes_are_set_and_fifo_queue_is_reported() -> None:
    wanted = {"FifoQueue": "true", "ContentBasedDeduplication": "true", "VisibilityTimeout": "60"}
    current = {
        "FifoQueue": "false",
        "ContentBasedDeduplication": "false",
        "VisibilityTimeout": "60",
    }
    changes = queue_changes(current, wanted)
    assert changes.to_set == {"ContentBasedDeduplication": "true"}
    [fixed] = changes.fixed
    assert (fixed.attribute, fixed.expected, fixed.found) == ("FifoQueue", "true", "false")
    assert "at creation" in fixed.remedy


def test_the_policy_keeps_other_statements_and_replaces_ours() -> None:
    grant = {"Sid": "EventBridge", "Effect": "Allow", "Action": "sqs:SendMessage"}
    stale_ours = {"Sid": "DenyInsecureTransport", "Effect": "Allow"}
    current = json.dumps({"Version": "2012-10-17", "Statement": [grant, stale_ours]})
    statements = json.loads(merged_policy(current, ARN))["Statement"]
    assert statements == [*json.loads(queue_policy(ARN))["Statement"], grant]
    # In another order, it is the same policy: not set again.
    reordered = json.dumps({"Version": "2012-10-17", "Statement": statements[::-1]})
    assert (
        queue_changes({"Policy": reordered}, {"Policy": merged_policy(current, ARN)}).to_set == {}
    )


@pytest.mark.parametrize("current", [None, "", "not json", '{"Statement": {"Sid": "X"}}'])
def test_a_missing_or_odd_policy_gets_ours(current: str | None) -> None:
    statements = json.loads(merged_policy(current, ARN))["Statement"]
    assert statements[0]["Sid"] == "DenyInsecureTransport"
    assert [s.get("Sid") for s in statements[1:]] == (["X"] if current and "X" in current else [])


USERS: dict[str, Any] = {
    "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"}],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": "email-index",
            "KeySchema": [{"AttributeName": "email_idx", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ],
    "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
}


def test_a_table_as_defined_has_no_mismatch() -> None:
    assert table_mismatches(USERS, USERS) == []
    assert table_updates(USERS, USERS) == []


def test_what_a_table_cant_change_in_place() -> None:
    described = USERS | {
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "email-index",
                "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    }
    found = {m.attribute: (m.expected, m.found) for m in table_mismatches(described, USERS)}
    assert found == {
        "KeySchema": ("user_id HASH", "id HASH"),
        "index email-index KeySchema": ("email_idx HASH", "email HASH"),
        "index email-index Projection": ("KEYS_ONLY", "ALL"),
        "StreamViewType": ("NEW_AND_OLD_IMAGES", "KEYS_ONLY"),
    }
    assert table_updates(described, USERS) == []  # a view type is reported, never switched


def test_a_stream_that_is_off_is_turned_on() -> None:
    described = USERS | {"StreamSpecification": {"StreamEnabled": False}}
    assert table_mismatches(described, USERS) == []
    assert table_updates(described, USERS) == [
        {"StreamSpecification": USERS["StreamSpecification"]}
    ]
    assert table_updates({k: v for k, v in USERS.items() if k != "StreamSpecification"}, USERS)


@pytest.mark.parametrize(
    ("description", "decision"),
    [
        ({"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}, TimeToLive.IN_LINE),
        ({"TimeToLiveStatus": "ENABLING", "AttributeName": "expires_at"}, TimeToLive.IN_LINE),
        ({"TimeToLiveStatus": "DISABLED"}, TimeToLive.ENABLE),
        ({}, TimeToLive.ENABLE),
        ({"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}, "ENABLED on ttl"),
        ({"TimeToLiveStatus": "DISABLING", "AttributeName": "expires_at"}, "DISABLING"),
    ],
)
def test_time_to_live(description: dict[str, str], decision: TimeToLive | str) -> None:
    got = time_to_live(description, "expires_at")
    if isinstance(decision, TimeToLive):
        assert got is decision
    else:
        assert isinstance(got, Mismatch) and got.expected == "ENABLED on expires_at"
        assert got.found.startswith(decision) and got.remedy


def test_a_key_is_compared_never_changed() -> None:
    create = {"KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT"}
    assert key_mismatches(create | {"KeyState": "Enabled"}, create) == []
    odd = {"KeyUsage": "SIGN_VERIFY", "KeySpec": "RSA_2048", "KeyState": "PendingDeletion"}
    found = {m.attribute: (m.expected, m.found) for m in key_mismatches(odd, create)}
    assert found == {
        "KeyUsage": ("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
        "KeySpec": ("SYMMETRIC_DEFAULT", "RSA_2048"),
        "KeyState": ("Enabled", "PendingDeletion"),
    }


def test_the_report_says_what_was_done_to_each_resource() -> None:
    report = ProvisionReport()
    report.created("queue q.fifo")
    report.updated("queue q.fifo", "Policy")  # just created: stays "created"
    report.found("table users")
    report.updated("table users", "TimeToLive")
    report.found("key alias/k")
    assert report.exit_code == 0
    assert report.outcomes == {
        "queue q.fifo": Outcome.CREATED,
        "table users": Outcome.UPDATED,
        "key alias/k": Outcome.AS_IS,
    }
    assert report.lines() == [
        "created  queue q.fifo",
        "updated  table users: TimeToLive",
        "as is    key alias/k",
        "3 resources (1 created, 1 as is, 1 updated): as configured",
    ]
    report.differs(
        "table users", Mismatch("StreamViewType", "NEW_AND_OLD_IMAGES", "KEYS_ONLY", "x")
    )
    report.differs("key alias/k", Mismatch("KeyState", "Enabled", "Disabled"))
    assert report.exit_code == EXIT_DIFFERS
    assert report.lines() == [
        "created  queue q.fifo",
        "updated  table users: TimeToLive",  # updated, and something else differs
        "differs  table users: StreamViewType: expected NEW_AND_OLD_IMAGES, found KEYS_ONLY (x)",
        "differs  key alias/k: KeyState: expected Enabled, found Disabled",
        "3 resources (1 created, 0 as is, 1 updated, 2 differ): 2 setting(s) provision can't"
        f" change, see above (exit {EXIT_DIFFERS})",
    ]


async def test_queues_of_two_kinds_are_refused_before_anything_is_made() -> None:
    # Nothing listens there, and no client is given: it must stop before any call.
    settings = make_settings("http://127.0.0.1:9").model_copy(update={"dlq": "plain-dlq"})
    with pytest.raises(Misconfigured, match="USERSTORE_QUEUE and USERSTORE_DLQ must both be"):
        await provision(settings, None, None, None)


def test_the_exit_code_is_the_clis_documented_one() -> None:
    assert EXIT_DIFFERS == ExitCode.PROVISION_DIFFERS
