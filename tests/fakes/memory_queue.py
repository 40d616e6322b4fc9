"""An in-memory SQS queue: the Queue port (userstore.worker.ports) with no emulator.

Close to SQS where the consumer's decisions depend on it: receive counts, visibility (on a clock
the test can move), receipts that change on every receive, FIFO groups handed out in order and
locked while one of their messages is in flight, deduplication while a message is queued. Every
call is recorded, and a test can make sends fail (AwsUnavailable, as the adapter would raise).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from userstore.worker.errors import AwsUnavailable
from userstore.worker.ports import MAX_BATCH, EntryFailed, OutgoingMessage, QueueMessage


@dataclass
class Stored:
    id: str
    message: OutgoingMessage
    receive_count: int = 0
    visible_at: float = 0.0
    receipt: str | None = None
    sent_at_ms: int = 0


@dataclass
class FakeQueue:
    fifo: bool = False
    clock: Callable[[], float] = time.monotonic
    fail_sends: bool = False
    stored: list[Stored] = field(default_factory=list)
    # (receipts' message ids, timeout) of every ChangeMessageVisibility call.
    visibility_changes: list[tuple[list[str], int]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # message ids, in order
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def put(self, body: str, *, group: str | None = None, received: int = 0, **kw: Any) -> str:
        """Enqueue a message as a publisher would; `received`: times it was received before."""
        stored = self._store(OutgoingMessage(body, group=group, **kw))
        stored.receive_count = received
        return stored.id

    def bodies(self) -> list[str]:
        return [s.message.body for s in self.stored]

    @property
    def sent(self) -> list[OutgoingMessage]:
        return [s.message for s in self.stored]

    def _store(self, message: OutgoingMessage) -> Stored:
        if self.fifo and message.group is None:
            raise ValueError("a FIFO queue needs a message group")
        dedup = message.deduplication_id
        for stored in self.stored:
            if dedup is not None and stored.message.deduplication_id == dedup:
                return stored  # deduplicated while queued
        stored = Stored(f"m-{next(self._ids)}", message, sent_at_ms=int(self.clock() * 1000))
        self.stored.append(stored)
        return stored

    def _by_receipt(self, receipt: str) -> Stored | None:
        return next((s for s in self.stored if s.receipt == receipt), None)

    async def receive(
        self, max_messages: int, *, wait_s: int, visibility_timeout_s: int
    ) -> list[QueueMessage]:
        now = self.clock()
        locked = (
            {s.message.group for s in self.stored if s.visible_at > now} if self.fifo else set()
        )
        found: list[QueueMessage] = []
        for stored in self.stored:
            if len(found) >= max_messages:
                break
            if stored.visible_at > now or (self.fifo and stored.message.group in locked):
                continue
            stored.receive_count += 1
            stored.receipt = f"{stored.id}/{stored.receive_count}"
            stored.visible_at = now + visibility_timeout_s
            found.append(
                QueueMessage(
                    id=stored.id,
                    body=stored.message.body,
                    receipt=stored.receipt,
                    receive_count=stored.receive_count,
                    group=stored.message.group,
                    attributes=dict(stored.message.attributes),
                    sent_at_ms=stored.sent_at_ms,
                )
            )
        # Always yield, as a network call does; an empty answer stands for a short poll.
        await asyncio.sleep(0 if found else min(wait_s, 0.01))
        return found

    async def delete(self, receipts: Sequence[str]) -> list[EntryFailed]:
        _check(receipts)
        failed = []
        for index, receipt in enumerate(receipts):
            stored = self._by_receipt(receipt)
            if stored is None:
                failed.append(EntryFailed(index, "ReceiptHandleIsInvalid"))
                continue
            self.stored.remove(stored)
            self.deleted.append(stored.id)
        await asyncio.sleep(0)
        return failed

    async def change_visibility(self, receipts: Sequence[str], timeout_s: int) -> list[EntryFailed]:
        _check(receipts)
        failed, changed = [], []
        for index, receipt in enumerate(receipts):
            stored = self._by_receipt(receipt)
            if stored is None:
                failed.append(EntryFailed(index, "ReceiptHandleIsInvalid"))
                continue
            stored.visible_at = self.clock() + timeout_s
            changed.append(stored.id)
        self.visibility_changes.append((changed, timeout_s))
        await asyncio.sleep(0)
        return failed

    async def send(self, message: OutgoingMessage) -> None:
        await asyncio.sleep(0)
        if self.fail_sends:
            raise AwsUnavailable("SendMessage failed (fake)")
        self._store(message)

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[EntryFailed]:
        _check(messages)
        for message in messages:
            await self.send(message)
        return []

    async def depth(self) -> int:
        return len(self.stored)


def _check(entries: Sequence[object]) -> None:
    if len(entries) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} entries per batch call")
