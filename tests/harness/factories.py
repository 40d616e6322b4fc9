"""User events as a publisher would send them (JSON-like dicts), for tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any


def event_dict(
    user: str,
    kind: str,
    seconds: float,
    data: Any = None,
    *,
    base: datetime,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An event (with a fresh id unless given), dated `seconds` after `base`; `data` omitted
    when None."""
    event: dict[str, Any] = {
        "event_id": event_id or f"evt-{uuid.uuid4().hex}",
        "type": kind,
        "user_id": user,
        "occurred_at": (base + timedelta(seconds=seconds)).isoformat(),
    }
    if data is not None:
        event["data"] = data
    return event
