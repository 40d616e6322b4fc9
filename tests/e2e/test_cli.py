"""End to end: the `userstore` commands as an operator runs them, one real process each.

`publish` and `get` run against the emulator process (`aws_endpoint`: moto server, or ministack)
provisioned by `userstore provision`; `run --embedded` and `demo` bring their own emulator.
Queues and tables are checked with plain boto3. Worker output always goes to a file, never a
pipe, so a chatty process can't block.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.harness import forgery
from tests.harness.emulator import free_port
from tests.harness.logs import count_logged, log_records
from tests.harness.model import expected_profiles
from tests.harness.stored import read_profiles, scan_all
from tests.harness.traffic import make_events, publish_with_boto3, timed_event, write_jsonl
from tests.harness.waiting import queue_counts, wait_drained, wait_until
from tests.harness.worker_process import (
    background,
    clients,
    env_without_endpoint,
    provisioned,
    run_cli,
    stop,
    userstore,
)
from tests.reliability.scenario import ScenarioRecorder
from userstore.events import parse_event, validate_event
from userstore.worker.profile import Presence
from userstore.worker.settings import Settings

# --- helpers -----------------------------------------------------------------------------------


def receive_all(sqs: Any, url: str, expected: int, timeout_s: float = 20) -> list[dict[str, Any]]:
    """Receive and delete until `expected` messages came back (FIFO: groups unlock on delete)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["MessageGroupId"],
        ).get("Messages", [])
        if not batch:
            time.sleep(0.1)
            continue
        got += batch
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    return got


def comparable(event: Any) -> dict[str, Any]:
    """An event as the contract sees it: what was set (explicit nulls kept), version aside."""
    model = parse_event(event) if isinstance(event, str) else validate_event(event)
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_unset=True)
    dumped.pop("schema_version", None)
    return dumped


# --- userstore publish -------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_publish_sends_every_event_from_a_file_and_from_stdin(
    aws_endpoint: str, tmp_path: Path
) -> None:
    settings, env = provisioned(aws_endpoint)
    sqs, _, url, _ = clients(settings)
    events, _ = make_events(users=5, per_user=3, seed=1)
    assert len(events) == 15
    # A blank line is not an event: skipped.
    lines = [json.dumps(e) for e in events]
    source = write_jsonl(tmp_path / "events.jsonl", [*lines[:7], "", *lines[7:]])

    done = run_cli(env, "publish", str(source))

    assert done.returncode == 0, done.stderr
    assert "sent 15 events" in done.stdout
    assert queue_counts(sqs, url) == (15, 0, 0)
    received = receive_all(sqs, url, expected=15)
    assert len(received) == 15
    assert sorted((comparable(m["Body"]) for m in received), key=lambda e: e["event_id"]) == sorted(
        (comparable(e) for e in events), key=lambda e: e["event_id"]
    )
    for message in received:
        assert parse_event(message["Body"]) == validate_event(json.loads(message["Body"]))
    # FIFO: the group is the user, and each user's events arrive in the order of the file.
    by_event = {e["event_id"]: e for e in events}
    order: dict[str, list[str]] = {}
    for message in received:
        event_id = json.loads(message["Body"])["event_id"]
        group = message["Attributes"]["MessageGroupId"]
        assert group == by_event[event_id]["user_id"]
        order.setdefault(group, []).append(event_id)
    for user, ids in order.items():
        assert ids == [e["event_id"] for e in events if e["user_id"] == user]
    assert queue_counts(sqs, url) == (0, 0, 0)

    # Standard input, by default.
    more, _ = make_events(users=2, per_user=2, seed=2)
    done = run_cli(env, "publish", stdin="\n".join(json.dumps(e) for e in more) + "\n")
    assert done.returncode == 0, done.stderr
    assert "sent 4 events" in done.stdout
    received = receive_all(sqs, url, expected=4)
    assert sorted(json.loads(m["Body"])["event_id"] for m in received) == sorted(
        e["event_id"] for e in more
    )


@pytest.mark.timeout(120)
def test_publish_sends_nothing_when_any_line_is_invalid(aws_endpoint: str, tmp_path: Path) -> None:
    settings, env = provisioned(aws_endpoint)
    sqs, _, url, _ = clients(settings)
    events, _ = make_events(users=5, per_user=3, seed=3)
    lines = [json.dumps(e) for e in events]
    marker = f"Marker{uuid.uuid4().hex[:12]}Personal"
    user = events[0]["user_id"]

    unknown_field = json.dumps(timed_event(user, "user.updated", 9, {"shoe_size": marker}))
    bad_email = json.dumps(timed_event(user, "user.updated", 9, {"email": f"{marker} at example"}))
    not_json = '{"event_id": "evt-x", "data": {"given_name": "' + marker
    cases = {
        "unknown field": (unknown_field, ["shoe_size", "unknown field"]),
        "invalid value": (bad_email, ["data.email"]),
        "not JSON": (not_json, ["not valid JSON"]),
    }
    for name, (bad_line, names) in cases.items():
        # The invalid line comes after enough valid ones to fill a batch: nothing may go out.
        source = write_jsonl(tmp_path / "bad.jsonl", [*lines[:12], bad_line, *lines[12:]])
        done = run_cli(env, "publish", str(source))
        output = done.stdout + done.stderr
        assert done.returncode != 0, name
        assert done.stdout == "", name
        for needle in names:
            assert needle in done.stderr, (name, done.stderr)
        assert marker not in output, name
        assert queue_counts(sqs, url) == (0, 0, 0), name

    # Also through standard input.
    done = run_cli(env, "publish", "-", stdin=f"{lines[0]}\n{unknown_field}\n")
    assert done.returncode != 0
    assert "shoe_size" in done.stderr
    assert marker not in done.stdout + done.stderr
    assert queue_counts(sqs, url) == (0, 0, 0)


# --- userstore get -----------------------------------------------------------------------------


def apply_in_process(settings: Settings, events: list[dict[str, Any]]) -> None:
    """What the worker does with each event, without SQS: parse, then the handler."""
    from userstore.worker.app import components

    async def apply() -> None:
        async with components(settings) as parts:
            for event in events:
                await parts.handler.handle(parse_event(json.dumps(event)))

    asyncio.run(apply())


def get_item(ddb: Any, table: str, user: str) -> dict[str, Any]:
    item: dict[str, Any] = ddb.get_item(
        TableName=table, Key={"user_id": {"S": user}}, ConsistentRead=True
    )["Item"]
    return item


@pytest.mark.timeout(120)
def test_get_prints_profile_refuses_unknown_and_tampered_records(aws_endpoint: str) -> None:
    settings, env = provisioned(aws_endpoint)
    _, ddb, _, _ = clients(settings)
    events, personal = make_events(users=4, per_user=3, seed=4)
    users = list(dict.fromkeys(e["user_id"] for e in events))
    # The last user ends deleted.
    events.append(timed_event(users[3], "user.deleted", 10))
    apply_in_process(settings, events)
    expected = expected_profiles(events)
    assert expected[users[3]] is None
    assert all(expected[u] is not None for u in users[:3])

    # (a) present users: the profile, as JSON.
    for user in users[:3]:
        shown = run_cli(env, "get", user)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == expected[user]

    # (b) no such user, or only a tombstone: exit 1 and one line.
    for user in ["urn:fdc:gov.uk:2022:nobody-here", users[3]]:
        missing = run_cli(env, "get", user)
        assert missing.returncode == 1, missing.stderr
        assert missing.stdout == ""
        assert missing.stderr.count("\n") == 1 and missing.stderr.endswith("\n"), missing.stderr

    # (c) tampered records: exit 2, one line, nothing personal anywhere.
    def assert_refused(user: str) -> None:
        refused = run_cli(env, "get", user)
        assert refused.returncode == 2, (refused.returncode, refused.stdout, refused.stderr)
        assert refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and refused.stderr.endswith("\n"), refused.stderr
        for value in personal:
            assert value not in refused.stderr

    # A signed-only attribute changed in place (record format 2: the bookkeeping `h`, presence
    # flipped to deleted; there is no plaintext stamp left to edit).
    victim = users[0]
    forged_head = forgery.with_presence(get_item(ddb, settings.table, victim), Presence.DELETED)
    ddb.update_item(
        TableName=settings.table,
        Key={"user_id": {"S": victim}},
        UpdateExpression="SET h = :h",
        ExpressionAttributeValues={":h": forged_head["h"]},
    )
    assert_refused(victim)

    # The encrypted attribute (`d`: the clock and every claim) copied from another user's record.
    donor = get_item(ddb, settings.table, users[2])
    target = get_item(ddb, settings.table, users[1])
    assert "d" in donor and "B" in donor["d"]
    ddb.put_item(TableName=settings.table, Item=forgery.with_data_of(target, donor))
    assert_refused(users[1])

    # A whole record replayed under another user's key.
    ddb.put_item(
        TableName=settings.table,
        Item={**donor, "user_id": {"S": "urn:fdc:gov.uk:2022:impostor"}},
    )
    assert_refused("urn:fdc:gov.uk:2022:impostor")

    # The untouched record still reads, and the tampered ones were left as they were.
    assert json.loads(run_cli(env, "get", users[2]).stdout) == expected[users[2]]
    assert get_item(ddb, settings.table, users[1])["d"] == donor["d"]

    # (d) AWS unreachable: exit 3, one line.
    unreachable = {
        **env,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "USERSTORE_AWS_MAX_ATTEMPTS": "1",
    }
    down = run_cli(unreachable, "get", users[2])
    assert down.returncode == 3, (down.returncode, down.stderr[-2000:])
    assert down.stdout == ""
    assert down.stderr.count("\n") == 1, down.stderr


# --- userstore run --embedded ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_run_embedded_starts_handles_an_event_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = env_without_endpoint()
    log = tmp_path / "embedded.log"
    with background(userstore("run", "--embedded"), env, log) as proc:
        wait_until(
            lambda: count_logged(log, "worker.started") == 1,
            60,
            "the worker.started log line",
            proc,
            log,
        )
        # The emulator it started says where it is; publish one event there like a service would.
        endpoint = next(
            line.split(" at ", 1)[1].strip()
            for line in log.read_text().splitlines()
            if line.startswith("embedded AWS emulator at ")
        )
        sqs = boto3.session.Session(region_name="eu-west-2").client("sqs", endpoint_url=endpoint)
        url = sqs.get_queue_url(QueueName=Settings().queue)["QueueUrl"]
        event = timed_event(
            "urn:fdc:gov.uk:2022:embedded-1", "user.created", 0, {"given_name": "Em"}
        )
        sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps(event),
            MessageGroupId=event["user_id"],
            MessageDeduplicationId=event["event_id"],
        )
        wait_until(
            lambda: any(
                r.get("event") == "message.handled" and r.get("outcome") == "applied"
                for r in log_records(log)
            ),
            30,
            "the event to be applied",
            proc,
            log,
        )
        stop(proc, 30, log)
    events = [r.get("event") for r in log_records(log)]
    assert "worker.stopping" in events and events[-1] == "worker.stopped", events


# --- graceful shutdown under load --------------------------------------------------------------


@pytest.mark.timeout(180)
def test_sigterm_under_load_drains_and_a_second_worker_finishes_the_queue(
    aws_endpoint: str, tmp_path: Path, scenario: ScenarioRecorder
) -> None:
    drain_s = 10
    scenario.describe(
        "Graceful shutdown under load",
        load="300 events for 60 users, FIFO",
        faults=f"SIGTERM mid-load (drain bound {drain_s} s); a second worker finishes",
        checked="in-flight work drained within the drain bound (`drain.done`, no `drain.timeout`),"
        " then exit 0; every event handled once across both workers;"
        " DLQ empty; state = model; no personal value in logs or raw items",
    )
    settings, env = provisioned(
        aws_endpoint,
        {"USERSTORE_DRAIN_TIMEOUT_S": str(drain_s), "USERSTORE_VISIBILITY_TIMEOUT_S": "5"},
    )
    sqs, ddb, url, dlq = clients(settings)
    events, personal = make_events(users=60, per_user=5, seed=5)
    assert len(events) == 300
    publish_with_boto3(sqs, url, [(e["user_id"], e["event_id"], json.dumps(e)) for e in events])
    assert queue_counts(sqs, url) == (300, 0, 0)

    first = tmp_path / "first.log"
    with background(userstore("run"), env, first) as proc:
        wait_until(
            lambda: count_logged(first, "message.handled") >= 20,
            60,
            "20 handled messages",
            proc,
            first,
        )
        stop(proc, drain_s + 10, first)
    handled_first = count_logged(first, "message.handled")
    logged = [r.get("event") for r in log_records(first)]
    assert "worker.stopping" in logged and "drain.done" in logged, logged
    assert "drain.timeout" not in logged, "the drain did not finish within its bound"
    assert logged[-1] == "worker.stopped", logged
    # Stopped under load: work was left for the second worker.
    assert handled_first < len(events), "the queue drained before SIGTERM: nothing was tested"

    second = tmp_path / "second.log"
    with background(userstore("run"), env, second) as proc:
        wait_until(
            lambda: count_logged(second, "worker.started") == 1,
            60,
            "the second worker to start",
            proc,
            second,
        )
        # In-flight messages not deleted at SIGTERM come back after the 5 s visibility timeout.
        wait_drained(sqs, url, timeout_s=90)
        stop(proc, drain_s + 10, second)

    # Every message handled exactly once: the first worker flushed its deletes before exiting.
    assert handled_first + count_logged(second, "message.handled") == len(events)
    # Nothing lost, nothing dead-lettered, nothing personal in the logs or the raw items.
    assert queue_counts(sqs, dlq) == (0, 0, 0)
    expected = expected_profiles(events)
    assert read_profiles(settings, list(expected)) == expected
    logs = first.read_text() + second.read_text()
    raw = json.dumps(scan_all(ddb, settings.table), default=lambda b: b.decode("latin-1"))
    for value in personal:
        assert value not in logs
        assert value not in raw


# --- userstore demo ----------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_demo_reports_outcomes_ciphertext_and_dead_letters() -> None:
    # A short idle poll: with moto's 20 s default, a long poll started while every FIFO group is
    # locked does not see the groups unlock, and the demo randomly takes 20 s longer.
    done = subprocess.run(
        userstore("demo", "--users", "10"),
        env={**env_without_endpoint(), "USERSTORE_WAIT_TIME_S": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    lines = out.splitlines()

    # Counts by outcome, one line per event type.
    at = lines.index("events by outcome:")
    counts = lines[at + 1 : at + 4]
    assert [c.split()[0] for c in counts] == ["user.created", "user.updated", "user.deleted"]
    assert all("applied=" in c for c in counts)
    assert "applied=10" in counts[0]  # one create per user

    # One record as stored (format 2): the claims are in the ciphertext `d`, the bookkeeping in
    # the signed-only binary `h`; no claim has an attribute of its own.
    header = next(i for i, line in enumerate(lines) if line.startswith("one record as stored"))
    stored, _ = json.JSONDecoder().raw_decode("\n".join(lines[header + 1 :]))
    assert set(stored["d"]) == {"B"}
    assert set(stored["h"]) == {"B"}
    assert stored["format"] == {"N": "2"}
    assert not {"email", "given_name", "presence"} & set(stored)
    header = next(i for i, line in enumerate(lines) if line.startswith("the same record"))
    decrypted, _ = json.JSONDecoder().raw_decode("\n".join(lines[header + 1 :]))
    assert "@" in decrypted["email"]
    stored_text = json.dumps(stored)
    assert decrypted["email"] not in stored_text
    assert decrypted["given_name"] not in stored_text

    # Dead letters: one line per malformed message, each with a reason.
    at = lines.index("dead letters:")
    dead = [line for line in lines[at + 1 :] if line.strip()]
    assert len(dead) == 7, dead
    for line in dead:
        _event_id, error, reason = line.split(maxsplit=2)
        assert error == "InvalidMessage", line
        assert reason.strip() and reason != "?", line
    assert any("data.nickname: unknown field" in line for line in dead), dead


@pytest.mark.timeout(120)
def test_find_by_email_and_rotation_status(aws_endpoint: str) -> None:
    settings, env = provisioned(aws_endpoint)
    users = [f"urn:fdc:gov.uk:2022:find-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    emails = ["Ada@Example.org", "ada@example.org", "grace@example.org"]
    apply_in_process(
        settings,
        [
            timed_event(u, "user.created", 0, {"email": e})
            for u, e in zip(users, emails, strict=True)
        ],
    )
    found = run_cli(env, "find", "--email", "ADA@example.org")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == sorted(users[:2])
    missing = run_cli(env, "find", "--email", "nobody@example.org")
    assert (missing.returncode, missing.stdout) == (1, "")
    status = run_cli(env, "rotation", "status")
    assert status.returncode == 0, status.stderr
    assert "3  kms:arn:aws:kms:" in status.stdout
    assert "2  kms:arn:aws:kms:" in status.stdout  # the two control records
    assert "no old keys" in status.stdout and "can NOT" not in status.stdout
    # A forged candidate (signed attribute edited: record format 2's bookkeeping `h`, an event
    # spliced in as remembered) is skipped: named on stderr, exit 0 while a verified one
    # matched, 2 once none did (the forged one may be the user wanted).
    _sqs, ddb, _q, _dlq = clients(settings)
    skipped = []
    for forged in users[1], users[0]:
        item = forgery.with_remembered(get_item(ddb, settings.table, forged), "next", None)
        ddb.put_item(TableName=settings.table, Item=item)
        skipped.append(run_cli(env, "find", "--email", "ADA@example.org"))
    assert (skipped[0].returncode, skipped[0].stdout.split()) == (0, [users[0]])
    assert (skipped[1].returncode, skipped[1].stdout) == (2, "")
    for done, forged in zip(skipped, ([users[1]], users[:2]), strict=True):
        assert "security.record_verification_failed" in done.stderr
        assert [
            line.rsplit(" ", 1)[1]
            for line in done.stderr.splitlines()
            if line.startswith("userstore: skipped a record that failed verification: ")
        ] == sorted(forged)
    for email in emails:
        everything = found.stderr + status.stdout + status.stderr
        everything += "".join(done.stderr for done in skipped)
        assert email.lower() not in everything.lower()


def test_a_plain_http_endpoint_off_loopback_is_refused(scenario: ScenarioRecorder) -> None:
    scenario.describe(
        "Transport: plain HTTP off loopback",
        load="one command",
        faults="AWS_ENDPOINT_URL=http://<this machine's non-loopback address>",
        checked="refused at start (exit 2, the error names plain HTTP); nothing sent (a listener at"
        " the endpoint, on this machine, is never connected to)",
    )
    # Refused before any client exists: nothing is sent anywhere. (That an explicit allowance
    # lets it through is a unit test: this machine must not send traffic off loopback.) The
    # endpoint is this machine's own non-loopback address, where the test listens: the packets
    # never leave the machine, and a connection would show as one to accept.
    with socket.socket() as listener:
        listener.bind((own_address(), 0))
        listener.listen()
        listener.setblocking(False)
        host, port = listener.getsockname()[:2]
        env = env_without_endpoint() | {"AWS_ENDPOINT_URL": f"http://{host}:{port}"}
        refused = run_cli(env, "get", "urn:fdc:gov.uk:2022:x")
        assert refused.returncode == 2
        assert "plain HTTP" in refused.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected: nothing was sent


def own_address() -> str:
    """This machine's address on its default route, not loopback (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = str(probe.getsockname()[0])
        except OSError:
            address = "127.0.0.1"  # no route: refused below
    parsed = ipaddress.ip_address(address)
    if parsed.is_unspecified or parsed.is_loopback:
        pytest.skip("no non-loopback address on this machine to listen on")
    return address
