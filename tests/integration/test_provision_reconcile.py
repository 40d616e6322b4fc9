"""`provision` on resources that exist and differ: what AWS lets it change is updated, the rest
reported (resource, attribute, expected, found), and a second run finds everything as it is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.settings import make_settings
from userstore.worker.app import aws_clients
from userstore.worker.errors import KeyNotFound
from userstore.worker.provision import TABLE_EXTRAS, Provisioned, provision
from userstore.worker.provision_report import EXIT_DIFFERS, Outcome, ProvisionReport
from userstore.worker.resources import definition, render, setting_values
from userstore.worker.settings import Settings

EVENTBRIDGE_GRANT = {
    "Sid": "EventBridgeMaySend",
    "Effect": "Allow",
    "Principal": {"Service": "events.amazonaws.com"},
    "Action": "sqs:SendMessage",
    "Resource": "*",
}


async def _run(settings: Settings, clients: Any) -> tuple[Provisioned, ProvisionReport]:
    report = ProvisionReport()
    done = await provision(settings, clients.kms, clients.dynamodb, clients.sqs, report)
    return done, report


async def _attributes(clients: Any, url: str) -> dict[str, str]:
    got = await clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    return dict(got["Attributes"])


async def test_a_second_run_finds_everything_as_it_is(moto_endpoint: str) -> None:
    settings = make_settings(moto_endpoint)
    async with aws_clients(settings) as clients:
        _, first = await _run(settings, clients)
        assert first.outcomes[f"queue {settings.queue}"] is Outcome.CREATED
        assert first.outcomes[f"table {settings.table}"] is Outcome.CREATED
        _, second = await _run(settings, clients)
    # Nothing is set again: every attribute read back compares equal to the definition's.
    assert set(second.outcomes.values()) == {Outcome.AS_IS}, second.lines()
    assert len(second.outcomes) == 3 + 3 + 2  # keys, tables, queues
    assert second.exit_code == 0 and not second.differences


async def test_a_queue_from_before_gets_content_based_deduplication(moto_endpoint: str) -> None:
    """The queue as an earlier provision made it (deduplication off), changed by hand too, and
    with an operator's grant for EventBridge in its policy: brought in line, the grant kept."""
    settings = make_settings(moto_endpoint)
    async with aws_clients(settings) as clients:
        done, _ = await _run(settings, clients)
        url = done.queue_url
        before = await _attributes(clients, url)
        policy = json.loads(before["Policy"])
        policy["Statement"].append(EVENTBRIDGE_GRANT)
        await clients.sqs.set_queue_attributes(
            QueueUrl=url,
            Attributes={
                "ContentBasedDeduplication": "false",
                "VisibilityTimeout": "7",
                "Policy": json.dumps(policy),
            },
        )
        _, report = await _run(settings, clients)
        after = await _attributes(clients, url)
        _, again = await _run(settings, clients)
    resource = f"queue {settings.queue}"
    assert report.outcomes[resource] is Outcome.UPDATED
    assert report.updated_settings[resource] == ["ContentBasedDeduplication", "VisibilityTimeout"]
    assert f"updated  {resource}: ContentBasedDeduplication, VisibilityTimeout" in report.lines()
    assert report.exit_code == 0
    assert after["ContentBasedDeduplication"] == "true"
    assert after["VisibilityTimeout"] == str(settings.visibility_timeout_s)
    statements = json.loads(after["Policy"])["Statement"]
    assert [s["Sid"] for s in statements] == ["DenyInsecureTransport", "EventBridgeMaySend"]
    assert again.outcomes[resource] is Outcome.AS_IS


def _users_table(settings: Settings, **changes: Any) -> dict[str, Any]:
    """The users table's create_table arguments as the definition has them, with `changes`
    (None: left out): a table made by hand or by an earlier version."""
    spec = render(definition()["tables"][0], setting_values(settings) | {"storage_key_arn": ""})
    create = {k: v for k, v in spec.items() if k not in TABLE_EXTRAS} | changes
    return {k: v for k, v in create.items() if v is not None and k != "SSESpecification"}


async def test_what_cant_change_in_place_is_reported(moto_endpoint: str) -> None:
    """A stream with another view type (moto can't switch one off and on again: the table is
    made so), time to live switched off, the records key disabled: reported or put right."""
    settings = make_settings(moto_endpoint)
    name = settings.table
    keys_only = {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}
    async with aws_clients(settings) as clients:
        ddb = clients.dynamodb
        await ddb.create_table(**_users_table(settings, StreamSpecification=keys_only))
        done, _ = await _run(settings, clients)
        await ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": False, "AttributeName": "expires_at"},
        )
        await clients.kms.disable_key(KeyId=done.key_arn.rsplit("/", 1)[1])
        _, report = await _run(settings, clients)
        ttl = await ddb.describe_time_to_live(TableName=name)
        table = (await ddb.describe_table(TableName=name))["Table"]
    assert report.exit_code == EXIT_DIFFERS
    found = {(d.resource, d.mismatch.attribute): d.mismatch for d in report.differences}
    stream_at, key_at = (f"table {name}", "StreamViewType"), (f"key {settings.kms_key}", "KeyState")
    assert set(found) == {stream_at, key_at}
    stream = found[stream_at]
    assert (stream.expected, stream.found) == ("NEW_AND_OLD_IMAGES", "KEYS_ONLY")
    assert "disable the stream" in stream.remedy
    assert (found[key_at].expected, found[key_at].found) == ("Enabled", "Disabled")
    lines = report.lines()
    expected_line = f"differs  table {name}: StreamViewType: expected NEW_AND_OLD_IMAGES, found"
    assert any(line.startswith(expected_line + " KEYS_ONLY (") for line in lines), lines
    assert lines[-1].endswith(f"(exit {EXIT_DIFFERS})")
    # What could change did: time to live is on again; the view type was left as it was.
    # (and SSE asked for again: the table was made without it, and moto ignores the update)
    assert report.updated_settings[f"table {name}"] == ["SSESpecification", "TimeToLive"]
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] in ("ENABLED", "ENABLING")
    assert table["StreamSpecification"]["StreamViewType"] == "KEYS_ONLY"


async def test_a_table_without_its_stream_gets_it(moto_endpoint: str) -> None:
    settings = make_settings(moto_endpoint)
    async with aws_clients(settings) as clients:
        ddb, name = clients.dynamodb, settings.table
        await ddb.create_table(**_users_table(settings, StreamSpecification=None))
        _, report = await _run(settings, clients)
        table = (await ddb.describe_table(TableName=name))["Table"]
    assert "StreamSpecification" in report.updated_settings[f"table {name}"]
    assert report.exit_code == 0
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert table["LatestStreamArn"]


async def test_a_configured_key_that_does_not_exist_is_named(moto_endpoint: str) -> None:
    missing = "arn:aws:kms:eu-west-2:123456789012:key/00000000-0000-0000-0000-000000000000"
    settings = make_settings(moto_endpoint).model_copy(update={"kms_key": missing})
    async with aws_clients(settings) as clients:
        with pytest.raises(KeyNotFound, match=f"KMS key {missing} does not exist: name an"):
            await _run(settings, clients)


async def test_an_explicit_deduplication_id_still_wins(moto_endpoint: str) -> None:
    """Content-based deduplication on: the same body sent again under another explicit id (the
    publisher's event id, the demo's redelivery) is delivered again; without one, it is not."""
    settings = make_settings(moto_endpoint)
    async with aws_clients(settings) as clients:
        done, _ = await _run(settings, clients)
        sqs, body = clients.sqs, '{"same": "body"}'
        for dedup in ("first", "second"):
            await sqs.send_message(
                QueueUrl=done.queue_url,
                MessageBody=body,
                MessageGroupId="g",
                MessageDeduplicationId=dedup,
            )
        for _ in range(2):  # no id: the body's hash is the id, and the second is a duplicate
            await sqs.send_message(
                QueueUrl=done.queue_url, MessageBody=body + " ", MessageGroupId="g"
            )
        counts = await _attributes(clients, done.queue_url)
    assert counts["ApproximateNumberOfMessages"] == "3"
