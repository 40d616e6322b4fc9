"""Write and read units per event, from the sizes of the items a leg read and wrote (pure).

DynamoDB's rules (userstore.worker.item_size): a write costs a unit per 1 KB of item, rounded up
per item; a PutItem that replaces an item, and a DeleteItem, cost the larger of the old and the
new item; a write whose condition fails still costs its units. A strongly consistent read costs
a unit per 4 KB, at least one even for an absent item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from userstore.worker.item_size import item_size, read_units, write_units

Sizes = dict[str, int]  # an item's key (the user id) -> its size in bytes


def sizes_by_key(items: Iterable[Mapping[str, Any]], key: str = "user_id") -> Sizes:
    """Items as a plain scan hands them over (DynamoDB JSON, bytes for B)."""
    return {str(item[key]["S"]): item_size(item) for item in items if key in item}


def replacing_write_units(before: Sizes, after: Sizes) -> float:
    """Mean units of one write per key written: the larger of the old and the new item (a key
    only in `before` was deleted, one only in `after` created)."""
    keys = set(before) | set(after)
    if not keys:
        return 0.0
    return fmean(write_units(max(before.get(k, 0), after.get(k, 0))) for k in keys)


def mean_read_units(before: Sizes, keys: Iterable[str]) -> float:
    """Mean units of one strongly consistent read of each key's item (absent: the minimum)."""
    units = [read_units(before.get(k, 0)) for k in keys]
    return fmean(units) if units else 0.0


@dataclass(frozen=True)
class LegUnits:
    """What one leg did per event, and the sizes around it."""

    record_writes: float  # writes of user records per event (PutItem, DeleteItem)
    other_writes: float  # writes to other tables per event (idempotency records, leases)
    record_reads: float  # reads of user records per event (GetItem, or a BatchGetItem's keys)
    before: Sizes  # the records before the leg
    after: Sizes  # the records after it
    other_item_bytes: int = 0  # the other tables' items, for their units

    def write_units(self) -> float:
        record = self.record_writes * replacing_write_units(self.before, self.after)
        return record + self.other_writes * write_units(self.other_item_bytes)

    def read_units(self) -> float:
        keys = set(self.before) | set(self.after)
        return self.record_reads * mean_read_units(self.before, keys)


def mean_size(sizes: Sizes) -> float | None:
    return fmean(sizes.values()) if sizes else None
