"""Traffic for the worker process: events (with personal values to look for afterwards), and
publishing them with plain boto3, the way another service would."""

from __future__ import annotations

import functools
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.harness.factories import event_dict

NOW = datetime.now(UTC).replace(microsecond=0)
# event_dict(user, type, seconds after NOW, data)
timed_event = functools.partial(event_dict, base=NOW)


def make_traffic(seed: int, users: int) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Valid events (with duplicates), malformed bodies, and every personal value used."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    personal: list[str] = []
    for n in range(users):
        user = f"urn:fdc:gov.uk:2022:e2e-{uuid.uuid4().hex[:10]}"
        given, family = f"Given{rng.randrange(10**6):06d}x", f"Family{rng.randrange(10**6):06d}x"
        email = f"person.{rng.randrange(10**8):08d}@example.org"
        street = f"{rng.randrange(1, 999)} Secret Lane {n}"
        personal += [given, family, email, street]
        t = 0
        events.append(
            timed_event(
                user,
                "user.created",
                t,
                {"given_name": given, "email": email, "address": {"street_address": street}},
            )
        )
        for _ in range(rng.randrange(0, 4)):
            t += 1
            phone = f"+4477009{rng.randrange(10**5):05d}"
            personal.append(phone)
            events.append(
                timed_event(
                    user,
                    "user.updated",
                    t,
                    {"phone_number": phone, "family_name": family, "email": None},
                )
            )
        if rng.random() < 0.25:
            t += 1
            events.append(timed_event(user, "user.deleted", t))
    duplicates = rng.sample(events, k=len(events) // 5)
    malformed = [
        "{not json " + personal[0],
        json.dumps(
            {
                "event_id": "bad-1",
                "type": "user.created",
                "user_id": "x",
                "occurred_at": NOW.isoformat(),
                "data": {"email": personal[2].replace("@", " at ")},
            }
        ),
        json.dumps(
            {
                "event_id": "bad-2",
                "type": "user.updated",
                "user_id": "x",
                "occurred_at": NOW.isoformat(),
                "data": {"shoe_size": personal[1]},
            }
        ),
        json.dumps(
            {
                "event_id": "bad-3",
                "type": "user.exploded",
                "user_id": "x",
                "occurred_at": NOW.isoformat(),
            }
        ),
        json.dumps(
            {
                "event_id": "bad-4",
                "type": "user.created",
                "user_id": "x",
                "occurred_at": (NOW - timedelta(days=400)).isoformat(),
                "data": {"given_name": personal[0]},
            }
        ),
    ]
    return events + duplicates, malformed, personal


def publish_with_boto3(sqs: Any, url: str, messages: list[tuple[str, str, str]]) -> None:
    """(group, dedup id, body) triples, sent ten at a time."""
    for start in range(0, len(messages), 10):
        entries = [
            {"Id": str(i), "MessageBody": b, "MessageGroupId": g, "MessageDeduplicationId": d}
            for i, (g, d, b) in enumerate(messages[start : start + 10])
        ]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")


def make_events(users: int, per_user: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """`per_user` valid events for each of `users` users, and every personal value used.

    Each user gets a full create, then partial updates (some removing fields with null), and one
    user in six ends with a delete. Event times are strictly increasing per user.
    """
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    personal: list[str] = []
    for n in range(users):
        user = f"urn:fdc:gov.uk:2022:cli-{uuid.uuid4().hex[:12]}"
        given = f"Given{rng.randrange(10**6):06d}q"
        family = f"Family{rng.randrange(10**6):06d}q"
        email = f"cli.person.{rng.randrange(10**9):09d}@example.org"
        street = f"{rng.randrange(1, 999)} Hidden Row {n}"
        personal += [given, family, email, street]
        events.append(
            timed_event(
                user,
                "user.created",
                0,
                {
                    "email": email,
                    "email_verified": rng.random() < 0.5,
                    "given_name": given,
                    "birthdate": f"19{rng.randrange(40, 99)}-0{rng.randrange(1, 9)}-1{n % 9}",
                    "address": {"street_address": street, "country": "GB"},
                    "attributes": {"tier": "gold", "logins": n, "roles": ["a", "b"]},
                },
            )
        )
        for k in range(1, per_user):
            if k == per_user - 1 and n % 6 == 5:
                events.append(timed_event(user, "user.deleted", k))
                continue
            phone = f"+4477009{rng.randrange(10**5):05d}"
            personal.append(phone)
            patch: dict[str, Any] = rng.choice(
                [
                    {"phone_number": phone, "family_name": family},
                    {"email_verified": True, "attributes": {"tier": None, "logins": n + k}},
                    {"address": {"street_address": None, "locality": "Leeds"}},
                    {"birthdate": None, "phone_number": phone},
                ]
            )
            events.append(timed_event(user, "user.updated", k, patch))
    return events, personal


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def event_messages(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["user_id"], e["event_id"], json.dumps(e)) for e in events]
