"""What DynamoDB bills for an item: its size, and the write and read units that size costs.

The rules (DynamoDB developer guide, "Item sizes and formats"): an item's size is the sum of its
attribute names' UTF-8 lengths and its values' sizes. A string is its UTF-8 length, binary its
raw length, a number about one byte per two significant digits plus one, a boolean or null one
byte; a list or map costs 3 bytes plus one byte per element on top of its elements (a map's
keys count as names); a set is the sum of its elements. A write unit covers 1 KB of item
(rounded up), a strongly consistent read unit 4 KB (an eventually consistent read costs half).

Pure: items are DynamoDB JSON as the SDK hands them over (`{"S": ...}`, bytes for `B`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
_CONTAINER_OVERHEAD = 3


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """The item's size in bytes, as DynamoDB counts it for billing and the 400 KB limit."""
    return sum(_utf8(name) + value_size(value) for name, value in item.items())


def value_size(value: Mapping[str, Any]) -> int:
    """One typed attribute value's size (`{"S": "..."}`, `{"M": {...}}`, ...)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return _utf8(inner)
    if kind == "B":
        return len(_binary(inner))
    if kind == "N":
        return number_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_utf8(s) for s in inner)
    if kind == "BS":
        return sum(len(_binary(b)) for b in inner)
    if kind == "NS":
        return sum(number_size(n) for n in inner)
    if kind == "L":
        return _CONTAINER_OVERHEAD + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return _CONTAINER_OVERHEAD + sum(1 + _utf8(k) + value_size(v) for k, v in inner.items())
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def number_size(text: str) -> int:
    """One byte per two significant digits (leading and trailing zeros trimmed), plus one."""
    digits = Decimal(text).normalize().as_tuple().digits
    significant = len(digits) if any(digits) else 1
    return math.ceil(significant / 2) + 1


def write_units(size: int) -> int:
    """Write units one write of an item this size costs (standard tables, non-transactional)."""
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


def read_units(size: int, *, consistent: bool = True) -> float:
    """Read units one GetItem of an item this size costs (eventually consistent: half)."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def _binary(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError("binary attribute values must be bytes (decode base64 first)")
