"""A corpus of malformed SQS message bodies, and a hypothesis strategy for more.

Each entry is ``(name, body, reason)``: ``reason`` is a fragment the rejection reason must
contain (it names the problem). Wherever a body can hold one, it holds a known personal value
(``PERSONAL_VALUES``) so that tests can prove the value never reaches a reason, a log line, a
dead-letter attribute or a metric label.

SQS bodies are Unicode strings, so "invalid UTF-8" appears here the only ways it can reach a
``str``: lone surrogates (what ``bytes.decode("utf-8", "surrogateescape")`` makes of bad bytes),
U+FFFD replacement characters (what ``errors="replace"`` makes of them) and mojibake (UTF-8 bytes
decoded as latin-1). Raw invalid bytes are in ``BYTES_CORPUS``, for ``parse_event`` directly.

Not every body can be sent. ``moto_accepts`` says which ones the moto server takes (no lone
surrogates: botocore can't encode them and moto answers 500; at most 1 MiB); ``sqs_accepts``
says which ones real SQS would take (its character set, no empty body, at most 1 MiB). The
others are tested at the ``parse_event`` level only.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from hypothesis import strategies as st

from tests.harness import strategies as valid
from userstore.events import InvalidEvent, parse_event
from userstore.events.parse import MAX_BODY_BYTES, MAX_DEPTH

__all__ = [
    "BYTES_CORPUS",
    "CORPUS",
    "PERSONAL_EMAIL",
    "PERSONAL_NAME",
    "PERSONAL_VALUES",
    "SQS_MAX_BODY_BYTES",
    "Entry",
    "carries_marker",
    "malformed_bodies",
    "moto_accepts",
    "sqs_accepts",
]

PERSONAL_EMAIL = "Zxq-PERSONAL-7f3a@example.org"
PERSONAL_LOCAL_PART = "Zxq-PERSONAL-7f3a"
PERSONAL_NAME = "Zxq Secretname"
PERSONAL_FAMILY = "Zxqfamilyname"
PERSONAL_PHONE = "+447700900777"
PERSONAL_STREET = "77 Zxqsecret Lane"
PERSONAL_BIRTHDATE = "1977-07-17"
PERSONAL_VALUES: tuple[str, ...] = (
    PERSONAL_EMAIL,
    PERSONAL_LOCAL_PART,
    PERSONAL_NAME,
    PERSONAL_FAMILY,
    PERSONAL_PHONE,
    PERSONAL_STREET,
    PERSONAL_BIRTHDATE,
)

# Since August 2025 SQS takes bodies up to 1 MiB (and so does moto 5.2); SendMessageBatch
# takes at most that much in total.
SQS_MAX_BODY_BYTES = 1024 * 1024

OCCURRED_AT = "2026-11-28T10:00:00Z"


class Entry(NamedTuple):
    name: str
    body: str
    reason: str  # a fragment of the expected rejection reason


# --- building blocks ----------------------------------------------------------------------


def _profile() -> dict[str, Any]:
    return {
        "email": PERSONAL_EMAIL,
        "email_verified": True,
        "phone_number": PERSONAL_PHONE,
        "given_name": PERSONAL_NAME,
        "family_name": PERSONAL_FAMILY,
        "birthdate": PERSONAL_BIRTHDATE,
        "address": {"street_address": PERSONAL_STREET, "locality": "Leeds", "country": "GB"},
        "attributes": {"tier": "gold", "logins": 3},
    }


def _event(kind: str = "user.created", **overrides: Any) -> dict[str, Any]:
    """A valid event holding personal values, with top-level overrides (``...`` deletes)."""
    event: dict[str, Any] = {
        "event_id": "evt-corpus-1",
        "type": kind,
        "user_id": "urn:fdc:gov.uk:2022:corpus-1",
        "occurred_at": OCCURRED_AT,
    }
    if kind == "user.created":
        event["data"] = _profile()
    elif kind == "user.updated":
        event["data"] = {"given_name": PERSONAL_NAME, "email": PERSONAL_EMAIL, "family_name": None}
    for key, value in overrides.items():
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def _with_data(kind: str = "user.created", **fields: Any) -> dict[str, Any]:
    """A valid event whose data fields are overridden (``...`` deletes)."""
    event = _event(kind)
    for key, value in fields.items():
        if value is ...:
            event["data"].pop(key, None)
        else:
            event["data"][key] = value
    return event


def _dumps(obj: Any, ascii_only: bool = True) -> str:
    return json.dumps(obj, ensure_ascii=ascii_only)


_RAW_SLOT = "@@RAW@@"


def _placeholder(obj: dict[str, Any], replacement: str) -> str:
    """Serialize ``obj`` and put raw JSON text where the string ``_RAW_SLOT`` is."""
    text = _dumps(obj)
    slot = json.dumps(_RAW_SLOT)
    assert text.count(slot) == 1
    return text.replace(slot, replacement)


def _padded(size: int) -> str:
    """A valid event padded with trailing spaces (valid JSON) to exactly ``size`` bytes."""
    text = _dumps(_event())
    return text + " " * (size - len(text.encode()))


_MARKER_PATTERN = re.compile("|".join(re.escape(v) for v in PERSONAL_VALUES), re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html
_SQS_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def carries_marker(body: str) -> bool:
    return _MARKER_PATTERN.search(body) is not None


def moto_accepts(body: str) -> bool:
    """Whether moto's SQS takes this body (checked in tests/reliability/test_bad_input.py)."""
    if _SURROGATE.search(body):
        return False
    return len(body.encode()) <= SQS_MAX_BODY_BYTES


def sqs_accepts(body: str) -> bool:
    """Whether real SQS would take this body: its character set, not empty, size."""
    return bool(body) and moto_accepts(body) and not _SQS_FORBIDDEN.search(body)


# --- the corpus ---------------------------------------------------------------------------

CORPUS: list[Entry] = []


def _add(name: str, body: str, reason: str) -> None:
    assert all(entry.name != name for entry in CORPUS), name
    CORPUS.append(Entry(name, body, reason))


# Not JSON, or JSON that is not an object.
_VALID = _dumps(_event())
_add("not_json_text", f"not json at all: {PERSONAL_NAME} <{PERSONAL_EMAIL}>", "not valid JSON")
_add("not_json_single_quotes", f"{{'given_name': '{PERSONAL_NAME}'}}", "expecting a property name")
_add("not_json_comment", f"// {PERSONAL_NAME}\n{_VALID}", "not valid JSON")
_add(
    "not_json_trailing_comma", _VALID[:-1] + ", }", "trailing comma" if False else "not valid JSON"
)
_add("not_json_extra_data", _VALID + _VALID, "extra data after the value")
_add("not_json_bom", "\ufeff" + _VALID, "byte order mark")
_add("not_json_xml", f"<event><given_name>{PERSONAL_NAME}</given_name></event>", "not valid JSON")
_add("not_json_unquoted_keys", f'{{given_name: "{PERSONAL_NAME}"}}', "expecting a property name")
_add("truncated_missing_last_brace", _VALID[:-1], "not valid JSON")
_add("truncated_half", _VALID[: _VALID.index(PERSONAL_NAME) + len(PERSONAL_NAME) + 2], "not valid")
_add(
    "truncated_inside_string",
    _VALID[: _VALID.index(PERSONAL_NAME) + len(PERSONAL_NAME)],
    "unterminated string",
)
_add(
    "truncated_after_colon",
    _VALID[: _VALID.index('"family_name": ') + len('"family_name": ')],
    "expecting a value",
)
_add("truncated_escape", f'{{"given_name": "{PERSONAL_NAME}\\', "unterminated string")
_add("json_array", _dumps([_event()]), "must be a JSON object")
_add("json_array_of_markers", _dumps([PERSONAL_EMAIL, PERSONAL_NAME]), "must be a JSON object")
_add("json_string", _dumps(PERSONAL_EMAIL), "must be a JSON object")
_add("json_string_of_event", _dumps(_VALID), "must be a JSON object")
_add("json_number", "12345", "must be a JSON object")
_add("json_float", "-0.5e3", "must be a JSON object")
_add("json_null", "null", "must be a JSON object")
_add("json_true", "true", "must be a JSON object")
_add("empty_body", "", "expecting a value")
_add("whitespace_body", " \n\t ", "expecting a value")

# "Invalid UTF-8" as it reaches a str.
_add(
    "lone_high_surrogate_raw",
    _dumps(_with_data(given_name=PERSONAL_NAME + "\ud800"), ascii_only=False),
    "not valid Unicode",
)
_add(
    "surrogateescape_decoded_bytes",
    (b'{"given_name": "' + PERSONAL_NAME.encode() + b'\xff\xfe"}').decode(
        "utf-8", "surrogateescape"
    ),
    "not valid Unicode",
)
_add(
    "lone_high_surrogate_escaped",
    _dumps(_with_data(given_name=PERSONAL_NAME + "\ud800")),
    "data.given_name: must not contain unpaired surrogates",
)
_add(
    "lone_low_surrogate_escaped_in_street",
    _dumps(_with_data(address={"street_address": "\udc80" + PERSONAL_STREET})),
    "data.address.street_address: must not contain unpaired surrogates",
)
_add(
    "surrogate_escaped_in_attribute",
    _dumps(_with_data(attributes={"note": PERSONAL_NAME + "\udfff"})),
    "data.attributes.note: must not contain unpaired surrogates",
)
_add(
    "replacement_chars_in_user_id",
    _dumps(_event(user_id="urn:fdc:gov.uk:2022:\ufffd\ufffd"), ascii_only=False),
    "user_id: must contain only printable ASCII characters",
)
_add(
    "replacement_chars_in_event_id",
    _dumps(_event(event_id="evt-\ufffd-1"), ascii_only=False),
    "event_id: must contain only printable ASCII characters",
)
_add(
    "replacement_chars_in_phone",
    _dumps(_with_data(phone_number="+44\ufffd7700900777"), ascii_only=False),
    "data.phone_number: must be an E.164 phone number",
)
_add(
    "mojibake_latin1_name_with_c1_control",
    # "€" as UTF-8 decoded latin-1 is "â\x82¬": \x82 is a C1 control character.
    _dumps(
        _with_data(given_name=(PERSONAL_NAME + " €").encode().decode("latin-1")), ascii_only=False
    ),
    "data.given_name: must not contain control characters",
)
_add(
    "mojibake_latin1_in_user_id",
    _dumps(_event(user_id="urn:fdc:gov.uk:2022:Zoë".encode().decode("latin-1")), ascii_only=False),
    "user_id: must contain only printable ASCII characters",
)
_add(
    "mojibake_latin1_in_birthdate",
    _dumps(
        _with_data(birthdate="1977\u2013".encode().decode("latin-1") + "07-17"), ascii_only=False
    ),
    "data.birthdate: must be a calendar date",
)

# Wrong types for every envelope field.
_WRONG: dict[str, list[tuple[str, Any]]] = {
    "event_id": [("int", 42), ("null", None), ("list", [PERSONAL_NAME]), ("bool", True)],
    "type": [("int", 1), ("null", None), ("list", ["user.created"]), ("object", {"v": 1})],
    "user_id": [("int", 7), ("null", None), ("list", [PERSONAL_EMAIL]), ("object", {})],
    "occurred_at": [("int", 1795860000), ("float", 1795860000.5), ("null", None), ("list", [])],
    "schema_version": [("null", None), ("list", [1]), ("object", {"v": 1})],
    "data": [
        ("string", PERSONAL_EMAIL),
        ("list", [PERSONAL_NAME]),
        ("int", 1),
        ("bool", False),
        ("null", None),
    ],
}
for _field, _cases in _WRONG.items():
    for _label, _value in _cases:
        _add(
            f"wrong_type_{_field}_{_label}",
            _dumps(_event(**{_field: _value})),
            "type: must be a string" if _field == "type" else f"{_field}: must be",
        )
_add(
    "wrong_type_updated_data_string",
    _dumps(_event("user.updated", data=PERSONAL_NAME)),
    "data: must be an object",
)
_add(
    "wrong_type_deleted_data_list",
    _dumps(_event("user.deleted", data=[PERSONAL_NAME])),
    "data: must be absent, null or an empty object",
)
for _field, _value, _reason in [
    ("email", 5, "data.email: must be a string"),
    ("email_verified", "true", "data.email_verified: must be a boolean"),
    ("phone_number", 447700900777, "data.phone_number: must be a string"),
    ("phone_number_verified", 1, "data.phone_number_verified: must be a boolean"),
    ("given_name", {"first": PERSONAL_NAME}, "data.given_name: must be a string"),
    ("family_name", [PERSONAL_FAMILY], "data.family_name: must be a string"),
    ("birthdate", 19770717, "data.birthdate: must be a string"),
    ("address", PERSONAL_STREET, "data.address: must be an object"),
    ("attributes", [PERSONAL_NAME], "data.attributes: must be an object"),
    ("given_name", None, "data.given_name: must not be null"),
]:
    _add(
        f"wrong_type_data_{_field}_{type(_value).__name__}",
        _dumps(_with_data(**{_field: _value})),
        _reason,
    )
_add(
    "wrong_type_address_locality",
    _dumps(_with_data(address={"street_address": PERSONAL_STREET, "locality": 1})),
    "data.address.locality: must be a string",
)
_add(
    "wrong_type_attribute_object",
    _dumps(_with_data(attributes={"note": {"v": PERSONAL_NAME}})),
    "data.attributes.note: must be a string, integer, number, boolean or list of strings",
)
_add(
    "wrong_type_attribute_list_item",
    _dumps(_with_data(attributes={"tags": [PERSONAL_NAME, 1]})),
    "data.attributes.tags: list items must be strings",
)

# Unknown event types and schema versions.
for _label, _type in [
    ("renamed", "user.renamed"),
    ("upper", "USER.CREATED"),
    ("trailing_space", "user.created "),
    ("empty", ""),
    ("marker", PERSONAL_EMAIL),
]:
    _add(f"unknown_type_{_label}", _dumps(_event(type=_type)), "type: unknown event type")
for _label, _version, _reason in [
    ("2", 2, "schema_version: unsupported schema version (supported: 1)"),
    ("string_1", "1", "schema_version: must be an integer"),
    ("float_1", 1.0, "schema_version: must be an integer"),
    ("minus_1", -1, "schema_version: unsupported schema version"),
    ("true", True, "schema_version: must be an integer"),
    ("0", 0, "schema_version: unsupported schema version"),
    ("2_pow_64", 2**64, "schema_version: unsupported schema version"),
]:
    _add(f"schema_version_{_label}", _dumps(_event(schema_version=_version)), _reason)

# Invalid profile values.
for _label, _email in [
    ("space", PERSONAL_NAME),
    ("no_domain", PERSONAL_LOCAL_PART + "@"),
    ("no_at", PERSONAL_LOCAL_PART + ".example.org"),
    ("double_dot", PERSONAL_LOCAL_PART + "@example..org"),
    ("two_ats", PERSONAL_LOCAL_PART + "@@example.org"),
    ("display_name", f"{PERSONAL_NAME} <{PERSONAL_EMAIL}>"),
    ("fullwidth_at", PERSONAL_LOCAL_PART + "\uff20example.org"),
]:
    _add(
        f"invalid_email_{_label}", _dumps(_with_data(email=_email)), "data.email: not a valid email"
    )
_add(
    "invalid_email_too_long",
    _dumps(_with_data(email=PERSONAL_LOCAL_PART * 20 + "@example.org")),
    "data.email: string too long",
)
for _label, _phone in [
    ("national", "07700 900777"),
    ("spaces", "+44 7700 900777"),
    ("leading_zero", "+0447700900777"),
    ("too_long", "+4477009007771234"),
    ("letters", "+44770090077X"),
    ("marker", PERSONAL_NAME),
]:
    _add(
        f"invalid_phone_{_label}",
        _dumps(_with_data(phone_number=_phone)),
        "data.phone_number: must be an E.164 phone number",
    )
for _label, _date in [
    ("feb_30", "2026-02-30"),
    ("two_digit_year", "99-01-01"),
    ("no_padding", "2026-1-1"),
    ("month_13", "1977-13-17"),
    ("with_time", PERSONAL_BIRTHDATE + "T00:00:00Z"),
    ("slashes", "17/07/1977"),
    ("empty", ""),
]:
    _add(
        f"invalid_birthdate_{_label}",
        _dumps(_with_data(birthdate=_date)),
        "data.birthdate: must be a calendar date in YYYY-MM-DD form",
    )
for _label, _at, _reason in [
    ("no_offset", "2026-11-28T10:00:00", "occurred_at: must be an RFC 3339 timestamp"),
    ("date_only", "2026-11-28", "occurred_at: must be an RFC 3339 timestamp"),
    ("space_separator", "2026-11-28 10:00:00Z", "occurred_at: must be an RFC 3339 timestamp"),
    ("month_13", "2026-13-01T10:00:00Z", "occurred_at: must be an RFC 3339 timestamp"),
    ("feb_30", "2026-02-30T10:00:00Z", "occurred_at: must be an RFC 3339 timestamp"),
    ("hour_24", "2026-11-28T24:00:00Z", "occurred_at: must be an RFC 3339 timestamp"),
    ("offset_25h", "2026-11-28T10:00:00+25:00", "occurred_at: must be an RFC 3339 timestamp"),
    ("year_overflow", "9999-12-31T23:59:59-23:59", "occurred_at: must be an RFC 3339 timestamp"),
    ("unix_seconds_string", "1795860000", "occurred_at: must be an RFC 3339 timestamp"),
    ("garbage_marker", PERSONAL_NAME, "occurred_at: must be an RFC 3339 timestamp"),
    ("yesterday", "yesterday", "occurred_at: must be an RFC 3339 timestamp"),
    ("empty", "", "occurred_at: must be an RFC 3339 timestamp"),
    ("number", 1795860000, "occurred_at: must be a string (RFC 3339 timestamp)"),
    ("float", 1795860000.25, "occurred_at: must be a string (RFC 3339 timestamp)"),
]:
    _add(f"invalid_occurred_at_{_label}", _dumps(_event(occurred_at=_at)), _reason)

# Missing required fields.
for _field in ("event_id", "type", "user_id", "occurred_at", "data"):
    _add(f"missing_{_field}", _dumps(_event(**{_field: ...})), f"{_field}: field required")
_add(
    "missing_updated_data",
    _dumps(_event("user.updated", data=...)),
    "data: field required",
)
_add("missing_everything_but_data", _dumps({"data": _profile()}), "type: field required")
_add("empty_object", "{}", "type: field required")

# Unknown fields, top level and nested.
_add("unknown_top_level", _dumps(_event(nickname=PERSONAL_NAME)), "nickname: unknown field")
_add("unknown_top_level_case", _dumps(_event(Data=_profile())), "Data: unknown field")
_add("unknown_top_level_camel", _dumps(_event(eventId="evt-2")), "eventId: unknown field")
_add("unknown_in_data", _dumps(_with_data(nickname=PERSONAL_NAME)), "data.nickname: unknown field")
_add(
    "unknown_in_updated_data",
    _dumps(_event("user.updated", data={"middle_name": PERSONAL_NAME})),
    "data.middle_name: unknown field",
)
_add(
    "unknown_in_address",
    _dumps(_with_data(address={"street_address": PERSONAL_STREET, "flat": "7"})),
    "data.address.flat: unknown field",
)
_add(
    "unknown_in_address_patch",
    _dumps(_event("user.updated", data={"address": {"Locality": PERSONAL_STREET}})),
    "data.address.Locality: unknown field",
)
_add(
    "unknown_key_in_deleted_data",
    _dumps(_event("user.deleted", data={"given_name": PERSONAL_NAME})),
    "data: must be absent, null or an empty object",
)
_add(
    "unknown_field_with_dash",
    _dumps(_with_data(**{"given-name": PERSONAL_NAME})),
    'data["given-name"]: unknown field',
)

# Oversized bodies. Over MAX_BODY_BYTES but within what SQS takes: the worker must refuse them.
_add("oversized_one_byte_over", _padded(MAX_BODY_BYTES + 1), "body too large")
_add(
    "oversized_multibyte",  # fewer characters than the limit, more bytes
    _placeholder(
        _with_data(given_name=_RAW_SLOT),
        '"' + PERSONAL_NAME + "é" * (MAX_BODY_BYTES // 2) + '"',
    ),
    "body too large",
)
_add("oversized_at_sqs_limit", _padded(SQS_MAX_BODY_BYTES), "body too large")
# More than SQS takes: parse level only.
_add("oversized_over_sqs_limit", _padded(SQS_MAX_BODY_BYTES + 1), "body too large")
_add(
    "oversized_2MiB_string_attribute",
    _dumps(_with_data(attributes={"blob": PERSONAL_NAME + "x" * (2 * 1024 * 1024)})),
    "body too large",
)
_add(
    "long_string_attribute",
    _dumps(_with_data(attributes={"blob": PERSONAL_NAME + "x" * 2048})),
    "data.attributes.blob: string too long (max 1024)",
)
_add(
    "long_given_name",
    _dumps(_with_data(given_name=PERSONAL_NAME * 20)),
    "data.given_name: string too long (max 256)",
)

# Deep nesting.
_DEEP_MARKER = _dumps(PERSONAL_NAME)
for _depth in (MAX_DEPTH + 1, 10_000):
    _add(f"deep_arrays_{_depth}", "[" * _depth + _DEEP_MARKER + "]" * _depth, "nested too deeply")
    _add(
        f"deep_objects_{_depth}",
        '{"a": ' * _depth + _DEEP_MARKER + "}" * _depth,
        "nested too deeply",
    )
    _add(
        f"deep_in_attribute_{_depth}",
        _placeholder(
            _with_data(attributes={"tags": _RAW_SLOT}), "[" * _depth + _DEEP_MARKER + "]" * _depth
        ),
        "nested too deeply",
    )
_add("deep_unclosed_10000", '{"a": ' + "[" * 10_000 + _DEEP_MARKER, "nested too deeply")
_add(
    "deep_mixed_40",
    _placeholder(_with_data(address=_RAW_SLOT), '{"x": [' * 20 + _DEEP_MARKER + "]}" * 20),
    "nested too deeply",
)
_add(
    "depth_32_is_not_too_deep",  # the limit itself: rejected for what it is, not for depth
    "[" * MAX_DEPTH + _DEEP_MARKER + "]" * MAX_DEPTH,
    "must be a JSON object",
)
_add(
    "brackets_in_strings_are_not_depth",
    _dumps(_with_data(given_name="[" * 300 + PERSONAL_NAME)),
    "data.given_name: string too long",
)

# Huge numbers, NaN and Infinity.
_add(
    "int_5000_digits",
    _placeholder(_with_data(attributes={"n": _RAW_SLOT}), "9" * 5000),
    "integer longer than 40 digits",
)
_add(
    "int_5000_digits_schema_version",
    _placeholder(_event(schema_version=_RAW_SLOT), "1" * 5000),
    "integer longer than 40 digits",
)
_add(
    "float_1e400",
    _placeholder(_with_data(attributes={"n": _RAW_SLOT}), "1e400"),
    "number out of range",
)
_add(
    "float_minus_1e400",
    _placeholder(_with_data(attributes={"n": _RAW_SLOT}), "-1e400"),
    "number out of range",
)
_add(
    "float_huge_exponent",
    _placeholder(_with_data(attributes={"n": _RAW_SLOT}), "1e" + "9" * 5000),
    "number out of range",
)
_add(
    "attribute_2_pow_60",
    _dumps(_with_data(attributes={"n": 2**60})),
    "data.attributes.n: integer out of range",
)
_add(
    "attribute_minus_2_pow_53_minus_1",
    _dumps(_with_data(attributes={"n": -(2**53) - 1})),
    "data.attributes.n: integer out of range",
)
for _literal in ("NaN", "Infinity", "-Infinity"):
    _add(
        f"literal_{_literal.lstrip('-').lower()}{'_negative' if _literal[0] == '-' else ''}",
        _placeholder(_with_data(attributes={"n": _RAW_SLOT}), _literal),
        "NaN or Infinity",
    )
_add(
    "literal_nan_as_occurred_at",
    _placeholder(_event(occurred_at=_RAW_SLOT), "NaN"),
    "NaN or Infinity",
)

# Control characters.
for _label, _char in [("nul", "\x00"), ("esc", "\x1b"), ("nel", "\x85"), ("del", "\x7f")]:
    _add(
        f"control_{_label}_in_given_name",
        _dumps(_with_data(given_name=PERSONAL_NAME + _char)),
        "data.given_name: must not contain control characters",
    )
# json.dumps always escapes characters below U+0020: put them in raw.
_add(
    "control_nul_raw_in_string",  # unescaped in the JSON text itself
    _placeholder(_with_data(family_name=_RAW_SLOT), f'"{PERSONAL_FAMILY}\x00"'),
    "unescaped control character",
)
_add(
    "control_esc_raw_in_string",
    _placeholder(_with_data(family_name=_RAW_SLOT), f'"\x1b[31m{PERSONAL_FAMILY}"'),
    "unescaped control character",
)
_add(
    "control_nel_raw_in_locality",  # U+0085 needs no escaping in JSON
    _dumps(_with_data(address={"locality": "Leeds\x85" + PERSONAL_STREET}), ascii_only=False),
    "data.address.locality: must not contain control characters",
)
_add(
    "control_newline_in_email",
    _dumps(_with_data(email=PERSONAL_EMAIL + "\n")),
    "data.email: must not contain control characters",
)
_add(
    "control_in_attribute_list_item",
    _dumps(_with_data(attributes={"tags": [PERSONAL_NAME + "\t"]})),
    "data.attributes.tags: must not contain control characters",
)

# Duplicate keys (Python keeps the last, other parsers the first: ambiguous).
_add(
    "duplicate_event_id",
    _VALID[:-1] + ', "event_id": "evt-other"}',
    'duplicate key "event_id"',
)
_add(
    "duplicate_email",
    _VALID.replace(
        f'"email": "{PERSONAL_EMAIL}"',
        f'"email": "{PERSONAL_EMAIL}", "email": "other@example.org"',
    ),
    'duplicate key "email"',
)
_add(
    "duplicate_in_address",
    _placeholder(
        _with_data(address=_RAW_SLOT),
        f'{{"locality": "{PERSONAL_STREET}", "locality": "Leeds"}}',
    ),
    'duplicate key "locality"',
)

# Attribute limits.
_add(
    "too_many_attributes",
    _dumps(_with_data(attributes={f"a{i}": PERSONAL_NAME for i in range(51)})),
    "data.attributes: too many attributes (max 50)",
)
_add(
    "too_many_attributes_in_patch",
    _dumps(
        _event("user.updated", data={"attributes": {f"a{i}": PERSONAL_NAME for i in range(101)}})
    ),
    "data.attributes: too many attributes (max 100)",
)
_add(
    "attributes_over_16KiB",
    _dumps(_with_data(attributes={f"a{i}": PERSONAL_NAME * 30 for i in range(50)})),
    "data.attributes: too large",
)
_add(
    "many_errors_reason_capped",
    _dumps(_with_data(attributes={f"a{i}": {"v": PERSONAL_NAME} for i in range(50)})),
    "more",  # the reason lists the first few and says how many it left out
)
_add(
    "attribute_name_invalid",
    _dumps(_with_data(attributes={"1st": PERSONAL_NAME})),
    "invalid attribute name",
)

# Identifiers.
_add(
    "user_id_with_space",
    _dumps(_event(user_id="urn:fdc:gov.uk:2022:" + PERSONAL_NAME)),
    "user_id: must contain only printable ASCII characters without spaces",
)
_add(
    "user_id_empty",
    _dumps(_event(user_id="")),
    "user_id: must not be empty",
)
_add(
    "event_id_129_chars",
    _dumps(_event(event_id=(PERSONAL_EMAIL + "-") * 4 + "x" * (129 - 4 * 30))),
    "event_id: string too long (max 128)",
)
_add(
    "event_id_with_newline",
    _dumps(_event(event_id=PERSONAL_NAME + "\n")),
    "event_id: must contain only printable ASCII characters",
)

BYTES_CORPUS: list[tuple[str, bytes, str]] = [
    ("bytes_invalid_utf8", PERSONAL_NAME.encode() + b"\xff", "not valid UTF-8"),
    (
        "bytes_latin1_event",
        _dumps(_with_data(given_name="Zoë " + PERSONAL_NAME), False).encode("latin-1"),
        "not valid UTF-8",
    ),
    ("bytes_overlong_slash", b'{"given_name": "' + PERSONAL_NAME.encode() + b'\xc0\xaf"}', "UTF-8"),
    ("bytes_encoded_surrogate", b'{"a": "\xed\xa0\x80' + PERSONAL_NAME.encode() + b'"}', "UTF-8"),
    ("bytes_truncated_multibyte", _VALID.encode()[:-1] + b"\xe2\x82", "not valid UTF-8"),
    ("bytes_oversized", _padded(MAX_BODY_BYTES + 1).encode(), "body too large"),
    ("bytes_utf16", _VALID.encode("utf-16"), "not valid UTF-8"),
]


# --- hypothesis: invalid messages made by mutating valid ones -----------------------------

_marked_profiles = st.builds(
    lambda base, extra: {**base, **extra, "given_name": PERSONAL_NAME},
    valid.profiles,
    st.fixed_dictionaries(
        {},
        optional={
            "email": st.just(PERSONAL_EMAIL),
            "phone_number": st.just(PERSONAL_PHONE),
            "family_name": st.just(PERSONAL_FAMILY),
            "birthdate": st.just(PERSONAL_BIRTHDATE),
            "address": st.just({"street_address": PERSONAL_STREET}),
        },
    ),
)
_marked_patches = st.builds(
    lambda base, extra: {**base, **extra},
    valid.patches,
    st.fixed_dictionaries(
        {"email": st.just(PERSONAL_EMAIL)},
        optional={"given_name": st.just(PERSONAL_NAME), "family_name": st.just(PERSONAL_FAMILY)},
    ),
)


@st.composite
def _valid_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["user.created", "user.updated", "user.deleted"]))
    event: dict[str, Any] = {
        "event_id": f"evt-fuzz-{draw(st.integers(0, 10**9))}",
        "type": kind,
        "user_id": f"urn:fdc:gov.uk:2022:fuzz-{draw(st.integers(0, 99))}",
        "occurred_at": OCCURRED_AT,
    }
    if draw(st.booleans()):
        event["schema_version"] = 1
    if kind == "user.created":
        event["data"] = draw(_marked_profiles)
    elif kind == "user.updated":
        event["data"] = draw(_marked_patches)
    elif draw(st.booleans()):
        event["data"] = draw(st.sampled_from([None, {}]))
    parse_event(json.dumps(event))  # the starting point is valid
    return copy.deepcopy(event)  # mutations must not reach shared (st.just) values


_Mutation = Callable[[st.DrawFn, dict[str, Any]], tuple[Any, str]]
_UNKNOWN_KEYS = ["nickname", "shoe_size", "Email", "given-name", "eventId", "_meta", "x", "data2"]
_MARKED_WRONG = [[PERSONAL_NAME], {"v": PERSONAL_EMAIL}, [[PERSONAL_STREET]]]


def _drop_required(draw: st.DrawFn, event: dict[str, Any]) -> tuple[Any, str]:
    required = ["event_id", "type", "user_id", "occurred_at"]
    if event["type"] != "user.deleted":
        required.append("data")
    field = draw(st.sampled_from(required))
    del event[field]
    return event, f"{field}: field required"


def _wrong_type(draw: st.DrawFn, event: dict[str, Any]) -> tuple[Any, str]:
    created, updated = event["type"] == "user.created", event["type"] == "user.updated"
    # path -> wrong values; null is only wrong where a field may not be null.
    choices: dict[tuple[str, ...], list[Any]] = {
        ("event_id",): [1, 1.5, True, None, *_MARKED_WRONG],
        ("type",): [1, True, None, *_MARKED_WRONG],
        ("user_id",): [7, False, None, *_MARKED_WRONG],
        ("occurred_at",): [1795860000, 1795860000.5, None, True, *_MARKED_WRONG],
        ("schema_version",): ["1", 1.0, True, None, *_MARKED_WRONG],
    }
    if created or updated:
        nullable = [None] if created else []
        choices |= {
            ("data",): [PERSONAL_EMAIL, 1, True, [PERSONAL_NAME], *([None] if created else [])],
            ("data", "email"): [5, True, *nullable, *_MARKED_WRONG],
            ("data", "email_verified"): ["true", 1, *nullable, [PERSONAL_NAME]],
            ("data", "given_name"): [1, False, *nullable, *_MARKED_WRONG],
            ("data", "phone_number"): [447700900777, *nullable, *_MARKED_WRONG],
            ("data", "birthdate"): [19770717, *nullable, *_MARKED_WRONG],
            ("data", "address"): [PERSONAL_STREET, 1, [PERSONAL_STREET], *nullable],
            ("data", "address", "locality"): [1, True, *nullable, *_MARKED_WRONG],
            ("data", "attributes"): [PERSONAL_NAME, 1, [PERSONAL_NAME], *nullable],
            ("data", "attributes", "tier"): [{"v": PERSONAL_NAME}, [PERSONAL_NAME, 1], [[1]]],
        }
    path = draw(st.sampled_from(sorted(choices)))
    value = draw(st.sampled_from(choices[path]))
    target = event
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    if path == ("type",):
        return event, "type: must be a string"
    return event, ".".join(path) + ": "


def _inject_unknown_key(draw: st.DrawFn, event: dict[str, Any]) -> tuple[Any, str]:
    key = draw(st.sampled_from(_UNKNOWN_KEYS))
    value = draw(st.sampled_from([PERSONAL_NAME, PERSONAL_EMAIL, {"v": PERSONAL_STREET}]))
    where = ["top"] if event["type"] == "user.deleted" else ["top", "data", "address"]
    if event["type"] == "user.deleted":
        where.append("deleted_data")
    place = draw(st.sampled_from(where))
    if place == "top":
        event[key] = value
        return event, "unknown field"
    if place == "deleted_data":
        event["data"] = {key: value}
        return event, "data: must be absent, null or an empty object"
    if place == "data":
        event["data"][key] = value
        return event, "unknown field"
    if not isinstance(event["data"].get("address"), dict):
        event["data"]["address"] = {"locality": "Leeds"}
    event["data"]["address"][key] = value
    return event, "unknown field"


_BAD_TIMESTAMPS = [
    "2026-11-28T10:00:00",
    "2026-11-28",
    "2026-11-28 10:00:00Z",
    "2026-13-01T10:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-11-28T24:00:00Z",
    "2026-11-28T10:60:00Z",
    "2026-11-28T10:00:00+24:00",
    "2026-11-28T10:00:00.Z",
    "0000-01-01T00:00:00Z",
    "1795860000",
    "",
    "now",
    PERSONAL_NAME,
]


def _break_timestamp(draw: st.DrawFn, event: dict[str, Any]) -> tuple[Any, str]:
    if draw(st.booleans()):
        event["occurred_at"] = draw(st.sampled_from(_BAD_TIMESTAMPS))
    else:
        # Any single character removed from a valid RFC 3339 timestamp breaks its fixed shape.
        at = OCCURRED_AT
        index = draw(st.integers(0, len(at) - 1))
        event["occurred_at"] = at[:index] + at[index + 1 :]
    return event, "occurred_at: must be an RFC 3339 timestamp"


def _nest_deeply(draw: st.DrawFn, event: dict[str, Any]) -> tuple[Any, str]:
    depth = draw(st.integers(MAX_DEPTH + 1, 3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a": ', "}"), ('[{"a": ', "}]")]))
    places = ["top", "body"]
    if event["type"] != "user.deleted":
        places += ["attributes", "address"]
    place = draw(st.sampled_from(places))
    inner = opener * depth + json.dumps(PERSONAL_NAME) + closer * depth
    if place == "body":
        return inner, "nested too deeply"
    if place == "top":
        event["extra"] = _RAW_SLOT
    elif place == "attributes":
        event["data"]["attributes"] = {"tags": _RAW_SLOT}
    else:
        event["data"]["address"] = _RAW_SLOT
    return (event, inner), "nested too deeply"


_SINGLE_LINE_FIELDS = [
    ("given_name",),
    ("family_name",),
    ("email",),
    ("address", "locality"),
    ("address", "region"),
    ("address", "postal_code"),
    ("address", "country"),
]
_CONTROL_CHARS = st.sampled_from([chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]])


def _add_control_characters(draw: st.DrawFn, event: dict[str, Any]) -> tuple[Any, str]:
    if event["type"] == "user.deleted":
        event["type"] = "user.created"
        event["data"] = {"given_name": PERSONAL_NAME}
    path = draw(st.sampled_from(_SINGLE_LINE_FIELDS))
    value = PERSONAL_EMAIL if path == ("email",) else PERSONAL_NAME
    position = draw(st.sampled_from(["start", "middle", "end"]))
    chars = "".join(draw(st.lists(_CONTROL_CHARS, min_size=1, max_size=3)))
    if position == "start":
        value = chars + value
    elif position == "end":
        value = value + chars
    else:
        value = value[:3] + chars + value[3:]
    target = event["data"]
    if len(path) == 2:
        if not isinstance(target.get("address"), dict):
            target["address"] = {}
        target = target["address"]
    target[path[-1]] = value
    # json.dumps escapes those below U+0020; with ensure_ascii=False the C1 ones stay raw.
    return event, "control characters"


_MUTATIONS: dict[str, _Mutation] = {
    "drop_required": _drop_required,
    "wrong_type": _wrong_type,
    "unknown_key": _inject_unknown_key,
    "bad_timestamp": _break_timestamp,
    "deep_nesting": _nest_deeply,
    "control_characters": _add_control_characters,
}


def _serialize(draw: st.DrawFn, obj: Any) -> str:
    raw: str | None = None
    if isinstance(obj, tuple):
        obj, raw = obj
    if isinstance(obj, str):
        return obj
    ascii_only = draw(st.booleans())
    indent = draw(st.sampled_from([None, 2]))
    text = json.dumps(obj, ensure_ascii=ascii_only, indent=indent)
    if raw is not None:
        text = text.replace(json.dumps(_RAW_SLOT), raw)
    return text


@st.composite
def _malformed(draw: st.DrawFn) -> Entry:
    name = draw(st.sampled_from(sorted(_MUTATIONS)))
    event = draw(_valid_events())
    mutated, reason = _MUTATIONS[name](draw, event)
    body = _serialize(draw, mutated)
    if not carries_marker(body):
        # e.g. a dropped field or a deleted event: carry one anyway, in a second error.
        body = body[:-1].rstrip() + f', "comment": {json.dumps(PERSONAL_NAME)}}}'
    try:
        parse_event(body)
    except InvalidEvent:
        pass
    else:  # pragma: no cover - a bug in this strategy, not in the product
        raise AssertionError(f"mutation {name} produced a valid event: {body[:300]}")
    return Entry(f"hypothesis:{name}", body, reason)


def malformed_bodies() -> st.SearchStrategy[Entry]:
    """Invalid message bodies made by mutating valid events; each holds a personal value."""
    return _malformed()
