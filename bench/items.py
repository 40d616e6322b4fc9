"""DynamoDB-JSON items to and from plain JSON (binary attributes as base64), for templates."""

from __future__ import annotations

import base64
from typing import Any

Item = dict[str, Any]


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"__b64__": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__b64__"}:
            return base64.b64decode(value["__b64__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_item(item: Item) -> Item:
    encoded: Item = _encode(item)
    return encoded


def decode_item(item: Item) -> Item:
    decoded: Item = _decode(item)
    return decoded
