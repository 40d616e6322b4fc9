"""A scripted event handler for the queue loops' unit tests (the consumer, the Lambda batch):
it fails the events it is told to, and records the order it saw events in, and the bursts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from userstore.worker.errors import AwsUnavailable, InvalidResult
from userstore.worker.handlers import Hints, Outcome
from userstore.worker.profile import Event


def event_body(event_id: str, user: str = "u") -> str:
    """A valid user.created body, as a publisher sends it."""
    return json.dumps(
        {
            "type": "user.created",
            "event_id": event_id,
            "user_id": user,
            "occurred_at": "2026-11-28T10:00:00Z",
            "data": {},
        }
    )


class ScriptedHandler:
    """`retry`: always AwsUnavailable; `retry_once`: the first time only; `dead`: InvalidResult."""

    def __init__(
        self, retry: Iterable[str] = (), retry_once: Iterable[str] = (), dead: Iterable[str] = ()
    ) -> None:
        self.retry, self.retry_once, self.dead = set(retry), set(retry_once), set(dead)
        self.seen: list[str] = []
        self.bursts: list[list[str]] = []  # the event ids of each burst handed over

    async def prefetch(self, user_ids: Iterable[str]) -> Hints:
        return {}

    async def handle_burst(
        self, events: Sequence[Event], hints: Hints | None = None
    ) -> list[Outcome | Exception]:
        """One answer per event, each on its own: the loops must keep the FIFO rules whatever
        the answers (a message after a retry is held even if its event applied)."""
        self.bursts.append([event.event_id for event in events])
        return [self._answer(event) for event in events]

    def _answer(self, event: Event) -> Outcome | Exception:
        self.seen.append(event.event_id)
        if event.event_id in self.retry:
            return AwsUnavailable("injected")
        if event.event_id in self.retry_once:
            self.retry_once.discard(event.event_id)
            return AwsUnavailable("injected")
        if event.event_id in self.dead:
            return InvalidResult("injected")
        return Outcome.APPLIED
