"""Custom attributes of a profile: names, values and the size bounds of the whole map."""

import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, PlainValidator, Strict, WithJsonSchema

from .checks import (
    NO_CONTROLS_EXCEPT_WHITESPACE_PATTERN,
    NO_CONTROLS_PATTERN,
    fail,
    free_text,
    single_line,
)
from .limits import (
    ATTRIBUTE_NAME_PATTERN,
    MAX_ATTRIBUTE_INTEGER,
    MAX_ATTRIBUTE_LIST_ITEM_LENGTH,
    MAX_ATTRIBUTE_LIST_ITEMS,
    MAX_ATTRIBUTE_NAME_LENGTH,
    MAX_ATTRIBUTE_STRING_LENGTH,
    MAX_ATTRIBUTES,
    MAX_ATTRIBUTES_JSON_BYTES,
    MAX_PATCH_ATTRIBUTES,
)

__all__ = [
    "AttributeName",
    "AttributeValue",
    "Attributes",
    "AttributesPatch",
    "attributes_json_size",
]

_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN.removeprefix("^").removesuffix("$"))


def _check_attribute_name(value: str) -> str:
    if not _ATTRIBUTE_NAME.fullmatch(value):
        raise fail("attribute_name", "invalid attribute name")
    return value


AttributeName = Annotated[str, Strict(), AfterValidator(_check_attribute_name)]

_ATTRIBUTE_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "maxLength": MAX_ATTRIBUTE_STRING_LENGTH,
            "pattern": NO_CONTROLS_EXCEPT_WHITESPACE_PATTERN,
        },
        {
            "type": "integer",
            "minimum": -MAX_ATTRIBUTE_INTEGER,
            "maximum": MAX_ATTRIBUTE_INTEGER,
        },
        {"type": "number"},
        {"type": "boolean"},
        {
            "type": "array",
            "maxItems": MAX_ATTRIBUTE_LIST_ITEMS,
            "items": {
                "type": "string",
                "maxLength": MAX_ATTRIBUTE_LIST_ITEM_LENGTH,
                "pattern": NO_CONTROLS_PATTERN,
            },
        },
    ]
}


def _validate_attribute_value(value: object) -> str | int | float | bool | list[str]:
    """Strict by hand: ``true`` is never an int and ``"1"`` never a number.

    One function instead of a pydantic union keeps error locations free of
    union member tags and yields a single error per bad value.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_ATTRIBUTE_INTEGER:
            raise fail(
                "attribute_integer_range",
                "integer out of range",
                max_value=MAX_ATTRIBUTE_INTEGER,
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail("attribute_number_finite", "must be a finite number")
        return float(value)
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_STRING_LENGTH:
            raise fail("string_too_long", "string too long", max_length=MAX_ATTRIBUTE_STRING_LENGTH)
        return free_text(value)
    if isinstance(value, list):
        if len(value) > MAX_ATTRIBUTE_LIST_ITEMS:
            raise fail("too_long", "too many items", max_length=MAX_ATTRIBUTE_LIST_ITEMS)
        for item in value:
            if not isinstance(item, str):
                raise fail("attribute_list_item_type", "list items must be strings")
            if len(item) > MAX_ATTRIBUTE_LIST_ITEM_LENGTH:
                raise fail(
                    "attribute_list_item_too_long",
                    "list item too long",
                    max_length=MAX_ATTRIBUTE_LIST_ITEM_LENGTH,
                )
            single_line(item)
        return [str(item) for item in value]
    raise fail(
        "attribute_value_type", "must be a string, integer, number, boolean or list of strings"
    )


AttributeValue = Annotated[
    str | int | float | bool | list[str],
    PlainValidator(_validate_attribute_value),
    WithJsonSchema(_ATTRIBUTE_VALUE_SCHEMA),
]


def attributes_json_size(attributes: Mapping[str, object]) -> int:
    """Size in bytes of the compact UTF-8 JSON form of ``attributes`` (the 16 KiB bound)."""
    text = json.dumps(attributes, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(text.encode("utf-8", "surrogatepass"))


def _check_size(attributes: Mapping[str, object]) -> None:
    if attributes_json_size(attributes) > MAX_ATTRIBUTES_JSON_BYTES:
        raise fail("attributes_too_large", "too large", max_bytes=MAX_ATTRIBUTES_JSON_BYTES)


def _check_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    if len(attributes) > MAX_ATTRIBUTES:
        raise fail("too_many_attributes", "too many attributes", max_attributes=MAX_ATTRIBUTES)
    _check_size(attributes)
    return attributes


def _check_patch_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    if len(attributes) > MAX_PATCH_ATTRIBUTES:
        raise fail(
            "too_many_attributes", "too many attributes", max_attributes=MAX_PATCH_ATTRIBUTES
        )
    values = {name: value for name, value in attributes.items() if value is not None}
    if len(values) > MAX_ATTRIBUTES:
        raise fail("too_many_attributes", "too many attributes", max_attributes=MAX_ATTRIBUTES)
    _check_size(values)
    return attributes


_ATTRIBUTE_NAMES_SCHEMA = {
    "pattern": ATTRIBUTE_NAME_PATTERN,
    "maxLength": MAX_ATTRIBUTE_NAME_LENGTH,
}
_SIZE_NOTE = (
    f"The compact UTF-8 JSON form of the values is at most {MAX_ATTRIBUTES_JSON_BYTES} bytes."
)

Attributes = Annotated[
    dict[AttributeName, AttributeValue],
    AfterValidator(_check_attributes),
    WithJsonSchema(
        {
            "type": "object",
            "description": f"Custom attributes. {_SIZE_NOTE}",
            "maxProperties": MAX_ATTRIBUTES,
            "propertyNames": _ATTRIBUTE_NAMES_SCHEMA,
            "additionalProperties": _ATTRIBUTE_VALUE_SCHEMA,
        }
    ),
]
AttributesPatch = Annotated[
    dict[AttributeName, AttributeValue | None],
    AfterValidator(_check_patch_attributes),
    WithJsonSchema(
        {
            "type": "object",
            "description": (
                "Custom attributes to set, or to remove with null. At most "
                f"{MAX_ATTRIBUTES} non-null values. {_SIZE_NOTE}"
            ),
            "maxProperties": MAX_PATCH_ATTRIBUTES,
            "propertyNames": _ATTRIBUTE_NAMES_SCHEMA,
            "additionalProperties": {"anyOf": [_ATTRIBUTE_VALUE_SCHEMA, {"type": "null"}]},
        }
    ),
]
