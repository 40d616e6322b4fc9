"""Shared helpers for integration tests: build components with counters on the AWS seams."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from userstore.events import parse_event
from userstore.worker.app import Components, components


@dataclass
class Calls:
    """AWS operations seen by the clients, counted through botocore's event hooks."""

    counts: Counter[str]

    def __getitem__(self, operation: str) -> int:
        return self.counts[operation]


def count_calls(client: Any, service: str, calls: Calls) -> None:
    def hook(model: Any, **_: Any) -> None:
        calls.counts[model.name] += 1

    client.meta.events.register(f"before-call.{service}.*", hook)


@asynccontextmanager
async def counted_components(settings: Any) -> AsyncIterator[tuple[Components, Calls]]:
    calls = Calls(Counter())
    async with components(settings) as parts:
        count_calls(parts.clients.dynamodb, "dynamodb", calls)
        # The encryption SDK's boto3 KMS client, which the key service builds.
        count_calls(parts.keys.sdk_kms(), "kms", calls)
        yield parts, calls


def event(event_id: str, kind: str, user: str, at: str, data: Any = None) -> Any:
    body: dict[str, Any] = {"event_id": event_id, "type": kind, "user_id": user, "occurred_at": at}
    if data is not None:
        body["data"] = data
    return parse_event(json.dumps(body))
