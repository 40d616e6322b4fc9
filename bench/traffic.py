"""Synthetic events, and sending them straight to the emulator (not through the counting proxy)."""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

CREATE, UPDATE, DUPLICATE, DELETE = "create", "partial update", "duplicate", "delete"
KINDS = (CREATE, UPDATE, DUPLICATE, DELETE)


class Traffic:
    """Bodies per kind for a set of users; a duplicate repeats the update with its event id."""

    def __init__(self, users: int, tag: str) -> None:
        self.users = [f"bench-{tag}-{n:06d}" for n in range(users)]
        self._base = datetime.now(UTC) - timedelta(seconds=120)
        self._updates: list[str] = []

    def _body(self, kind: str, user: str, seconds: float, data: Any = None) -> str:
        return event_body(kind, user, self._base + timedelta(seconds=seconds), data)

    def bodies(self, kind: str) -> list[str]:
        if kind == CREATE:
            return [
                self._body("user.created", u, 1, create_data(n)) for n, u in enumerate(self.users)
            ]
        if kind == UPDATE:
            self._updates = [
                self._body(
                    "user.updated",
                    u,
                    2,
                    {"phone_number": "+447700900123", "address": {"locality": "Leeds"}},
                )
                for u in self.users
            ]
            return self._updates
        if kind == DUPLICATE:
            return list(self._updates)
        return [self._body("user.deleted", u, 3) for u in self.users]


def create_data(n: int) -> dict[str, Any]:
    """The issue's typical profile: every OIDC claim the contract allows, a four-line street
    address and two custom attributes (about 330-370 bytes of compact JSON)."""
    return {
        "email": f"ada.{n}@example.org",
        "email_verified": n % 2 == 0,
        "phone_number": "+447700900123",
        "phone_number_verified": False,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "birthdate": "1990-12-10",
        "address": {
            "street_address": "Flat 4\n12 High St\nIslington\nLondon",
            "locality": "London",
            "region": "England",
            "postal_code": "N1 9GU",
            "country": "GB",
        },
        "attributes": {"tier": "gold", "logins": n % 100},
    }


# What a realistic update touches: one to three of these, each with a new value.
_CHANGES: tuple[tuple[str, ...], ...] = (
    ("given_name",),
    ("family_name",),
    ("phone_number",),
    ("phone_number_verified",),
    ("email",),
    ("email_verified",),
    ("address", "locality"),
    ("address", "postal_code"),
    ("address", "street_address"),
    ("attributes", "tier"),
    ("attributes", "logins"),
)


def update_data(rng: random.Random, n: int) -> dict[str, Any]:
    """A JSON Merge Patch touching one to three fields of the typical profile (n: a counter
    that makes each value new)."""
    patch: dict[str, Any] = {}
    for path in rng.sample(_CHANGES, rng.randint(1, 3)):
        patch_value = _value(path[-1], n)
        if len(path) == 1:
            patch[path[0]] = patch_value
        else:
            patch.setdefault(path[0], {})[path[1]] = patch_value
    return patch


def _value(name: str, n: int) -> Any:
    if name.endswith("_verified"):
        return n % 2 == 0
    if name == "logins":
        return n
    if name == "email":
        return f"ada.{n}@example.org"
    if name == "phone_number":
        return f"+4477009{n % 100000:05d}"
    if name == "street_address":
        return f"Flat {n % 90 + 1}\n12 High St\nIslington\nLondon"
    if name == "postal_code":
        return f"N{n % 9 + 1} 9GU"
    return f"{name[:4]}-{n}"


def event_body(
    kind: str, user: str, at: datetime, data: Any = None, event_id: str | None = None
) -> str:
    body: dict[str, Any] = {
        "event_id": event_id or f"evt-{uuid.uuid4().hex}",
        "type": kind,
        "user_id": user,
        "occurred_at": at.isoformat(),
    }
    if data is not None:
        body["data"] = data
    return json.dumps(body)


def history(user: str, n: int, events: int, rng: random.Random, start: datetime) -> list[str]:
    """A user's life in order: a create, then `events - 1` realistic updates, 1 ms apart."""
    bodies = [event_body("user.created", user, start, create_data(n))]
    for i in range(1, events):
        at = start + timedelta(milliseconds=i)
        bodies.append(event_body("user.updated", user, at, update_data(rng, n * 1000 + i)))
    return bodies


def event_id(body: str) -> str:
    return str(json.loads(body)["event_id"])


def send(sqs: Any, queue_url: str, bodies: list[str]) -> list[float]:
    """SendMessageBatch, ten at a time; FIFO: group per user, a fresh deduplication id. Answers
    each body's publish time (wall clock, when its batch was accepted)."""
    fifo = queue_url.endswith(".fifo")
    published: list[float] = []
    for start in range(0, len(bodies), 10):
        entries = []
        for i, body in enumerate(bodies[start : start + 10]):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
            if fifo:
                entry["MessageGroupId"] = json.loads(body)["user_id"]
                entry["MessageDeduplicationId"] = uuid.uuid4().hex
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"seeding failed: {response['Failed'][:1]}")
        published.extend([time.time()] * len(entries))
    return published
