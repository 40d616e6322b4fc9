"""Settled messages' receipts, deleted ten at a time (DeleteMessageBatch) or after a moment."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import UserstoreError
from .logs import get_logger
from .ports import MAX_BATCH, Queue

log = get_logger("userstore.sqs")

# How long a partial batch of receipts may wait to fill: costs no throughput, and saves most of
# the small calls when handling, not SQS, is the bottleneck (docs/performance.md).
_DELETE_FILL_S = 0.1


@dataclass
class BatchedDeletes:
    """Collects receipt handles and deletes them ten at a time (or after a few milliseconds)."""

    queue: Queue
    # Called after each delete call is answered (FIFO: a group's next messages come out now).
    on_sent: Callable[[], None] | None = None
    pending: list[tuple[str, str]] = field(default_factory=list)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _sending: set[asyncio.Event] = field(default_factory=set)  # set when its send is answered

    @property
    def idle(self) -> bool:
        """No receipt waiting to be sent, and no delete call under way."""
        return not self.pending and not self._sending

    def add(self, message_id: str, receipt: str) -> None:
        self.pending.append((message_id, receipt))
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() and not self.pending):
            if not self.pending:
                self._wakeup.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event is set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await self._wakeup.wait()
                continue
            await self._fill(stop)
            await self.flush_once()

    async def _fill(self, stop: asyncio.Event) -> None:
        """Wait, briefly, until a full batch is pending (or we are stopping)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DELETE_FILL_S
        while len(self.pending) < MAX_BATCH and not stop.is_set():
            self._wakeup.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()

    async def flush_once(self) -> None:
        batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
        if not batch:
            return
        sent = asyncio.Event()
        self._sending.add(sent)
        try:
            failures = await self.queue.delete([receipt for _, receipt in batch])
        except UserstoreError as exc:
            # The messages come back after their visibility timeout; handling them is idempotent.
            log.warning("delete.failed", count=len(batch), error=exc.reason)
            return
        finally:
            self._sending.discard(sent)
            sent.set()
            if self.on_sent is not None:
                self.on_sent()
        for failure in failures:
            log.warning("delete.failed", message_id=batch[failure.index][0], code=failure.code)

    async def flush(self) -> None:
        """Send every receipt added so far, now; return once they (and any send already under
        way, which may hold some of them) have been answered."""
        under_way = list(self._sending)
        await self.drain()
        for sent in under_way:
            await sent.wait()

    async def drain(self) -> None:
        while self.pending:
            await self.flush_once()
