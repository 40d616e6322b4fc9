"""An independent reference model of what the store should hold after a set of events.

It does the obvious thing, unlike worker.profile: drop duplicate event ids, sort by
occurred_at, then the documented tie-break (the first 4 bytes of SHA-256 of the event id),
apply each event in order with RFC 7396 merge-patch semantics. The
worker must arrive at the same profiles whatever order and however often events arrive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _drop_empty_containers(profile: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in profile.items() if not (isinstance(v, dict) and not v)}


def expected_profiles(events: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """user_id -> expected profile (None when deleted). Events are JSON-like dicts."""
    unique = {e["event_id"]: e for e in events}
    ordered = sorted(unique.values(), key=_order)
    profiles: dict[str, dict[str, Any] | None] = {}
    for event in ordered:
        uid = event["user_id"]
        if event["type"] == "user.created":
            profiles[uid] = _drop_empty_containers(
                {k: v for k, v in event["data"].items() if v is not None}
            )
        elif event["type"] == "user.updated":
            profiles[uid] = _drop_empty_containers(
                merge_patch(profiles.get(uid) or {}, event["data"])
            )
        else:
            profiles[uid] = None
    return profiles


def _order(event: Mapping[str, Any]) -> tuple[str, str]:
    from datetime import datetime

    when = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00")).astimezone(UTC)
    tie = hashlib.sha256(str(event["event_id"]).encode()).hexdigest()[:8]
    return (f"{when:%Y-%m-%dT%H:%M:%S.%f}", tie)
