"""A scripted fake of the SQS client the event Publisher is given, and events to publish."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from userstore.events import Profile, Publisher, UserCreated

FIFO = "https://sqs.us-east-1.amazonaws.com/123456789012/events.fifo"
STANDARD = "https://sqs.us-east-1.amazonaws.com/123456789012/events"
WHEN = datetime(2026, 11, 28, 10, tzinfo=UTC)

Entries = list[dict[str, str]]
Action = Callable[[Entries], dict[str, Any]] | Exception


def ok(entries: Entries) -> dict[str, Any]:
    return {"Successful": [{"Id": e["Id"], "MessageId": f"msg-{e['Id']}"} for e in entries]}


def fail(ids: set[str], *, sender_fault: bool, code: str = "InternalError") -> Action:
    def respond(entries: Entries) -> dict[str, Any]:
        return {
            "Successful": [
                {"Id": e["Id"], "MessageId": f"msg-{e['Id']}"}
                for e in entries
                if e["Id"] not in ids
            ],
            "Failed": [
                {"Id": e["Id"], "SenderFault": sender_fault, "Code": code, "Message": "nope"}
                for e in entries
                if e["Id"] in ids
            ],
        }

    return respond


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendMessageBatch",
    )


class FakeSQS:
    def __init__(self, *script: Action) -> None:
        self.script = list(script)
        self.calls: list[Entries] = []

    async def send_message_batch(self, *, QueueUrl: str, Entries: Entries) -> dict[str, Any]:
        assert QueueUrl in (FIFO, STANDARD)
        self.calls.append([dict(e) for e in Entries])
        action = self.script.pop(0) if self.script else ok
        if isinstance(action, Exception):
            raise action
        return action(Entries)

    @property
    def sent(self) -> list[dict[str, str]]:
        return [e for call in self.calls for e in call]


def publisher(client: FakeSQS, url: str = FIFO, **kwargs: Any) -> Publisher:
    return Publisher(client, url, initial_backoff=0, **kwargs)


def created(i: int, **data: Any) -> UserCreated:
    return UserCreated(
        event_id=f"evt-{i}", user_id=f"user-{i % 3}", occurred_at=WHEN, data=Profile(**data)
    )
