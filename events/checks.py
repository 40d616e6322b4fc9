"""What every field type of the event contract is built from.

``fail`` makes the ``PydanticCustomError`` with an error *type* of our own that
``events.parse.format_errors`` maps to a fixed message without input values;
``JsonSchemaExtra`` adds keywords to a type's generated JSON Schema; the text checks refuse
unpaired surrogates and control characters, with their JSON Schema patterns beside them.
"""

import re
from typing import Any

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

__all__ = [
    "NO_CONTROLS_EXCEPT_NEWLINES_PATTERN",
    "NO_CONTROLS_EXCEPT_WHITESPACE_PATTERN",
    "NO_CONTROLS_PATTERN",
    "JsonSchemaExtra",
    "fail",
    "free_text",
    "multi_line",
    "single_line",
]


class JsonSchemaExtra:
    """Annotated marker that adds keywords to a type's generated JSON Schema."""

    def __init__(self, **extra: Any) -> None:
        self.extra = extra

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(self.extra)
        return schema


def fail(error_type: str, message: str, **ctx: int) -> PydanticCustomError:
    # ctx only ever holds our own numeric limits, never input.
    return PydanticCustomError(error_type, message, ctx or None)


# --- text ------------------------------------------------------------------

_SURROGATES = re.compile(r"[\ud800-\udfff]")
# C0 controls, DEL and C1 controls.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_EXCEPT_NEWLINES = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROLS_EXCEPT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# JSON Schema (ECMA-262) versions of the checks above.
NO_CONTROLS_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
NO_CONTROLS_EXCEPT_NEWLINES_PATTERN = (
    "^[^\\u0000-\\u0009\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
)
NO_CONTROLS_EXCEPT_WHITESPACE_PATTERN = (
    "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"
)


def _check_text(value: str, controls: re.Pattern[str]) -> str:
    # Lone surrogates cannot be encoded as UTF-8 and would break storage later.
    if _SURROGATES.search(value):
        raise fail("invalid_unicode", "must not contain unpaired surrogates")
    if controls.search(value):
        raise fail("control_characters", "must not contain control characters")
    return value


def single_line(value: str) -> str:
    return _check_text(value, _CONTROLS)


def multi_line(value: str) -> str:
    return _check_text(value, _CONTROLS_EXCEPT_NEWLINES)


def free_text(value: str) -> str:
    return _check_text(value, _CONTROLS_EXCEPT_WHITESPACE)
