"""Exceptions of the event contract.

Messages never carry input values: they may end up in logs, metrics labels or
dead-letter annotations, and event bodies hold personal data. The worker never lets these
reach its queue loops: its message reader turns InvalidEvent into the worker's InvalidMessage
(same reason, event id and type), so one error tree decides how a message is settled.
"""


class EventError(Exception):
    """Root of every error raised by the ``events`` package."""


class InvalidEvent(EventError):
    """An event body or object does not satisfy the contract.

    ``reason`` names field paths and what is wrong with them, never the values.
    ``event_id`` and ``event_type`` are only set when they were present in the
    input *and* valid themselves, so that they are safe to log.
    """

    def __init__(
        self, reason: str, *, event_id: str | None = None, event_type: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.event_type = event_type

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return (
            f"InvalidEvent(reason={self.reason!r}, event_id={self.event_id!r}, "
            f"event_type={self.event_type!r})"
        )
