"""Synthetic events, and sending them straight to the emulator (not through the counting proxy)."""

from __future__ import annotations

import json
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
        body: dict[str, Any] = {
            "event_id": f"evt-{uuid.uuid4().hex}",
            "type": kind,
            "user_id": user,
            "occurred_at": (self._base + timedelta(seconds=seconds)).isoformat(),
        }
        if data is not None:
            body["data"] = data
        return json.dumps(body)

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
    return {
        "email": f"person.{n}@example.org",
        "email_verified": n % 2 == 0,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "birthdate": "1990-12-10",
        "address": {"locality": "London", "country": "GB", "postal_code": "N1 9GU"},
        "attributes": {"tier": "gold", "logins": n % 100},
    }


def send(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    """SendMessageBatch, ten at a time; FIFO: group per user, a fresh deduplication id."""
    fifo = queue_url.endswith(".fifo")
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
