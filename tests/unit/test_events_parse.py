"""Unit tests for events.parse_event: body checks, reasons and privacy."""

import json
import traceback
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from userstore.events import (
    EventError,
    EventType,
    InvalidEvent,
    Profile,
    ProfilePatch,
    UserCreated,
    UserDeleted,
    UserUpdated,
    format_errors,
    parse_event,
    validate_event,
)
from userstore.events.parse import MAX_BODY_BYTES, MAX_DEPTH, MAX_REASON_LENGTH


def envelope(event_type: str = "user.created", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": event_type,
        "event_id": "evt-1",
        "user_id": "user-1",
        "occurred_at": "2026-11-28T10:00:00Z",
    }
    if event_type != "user.deleted":
        event["data"] = {}
    event.update(overrides)
    return event


def body(event_type: str = "user.created", **overrides: Any) -> str:
    return json.dumps(envelope(event_type, **overrides))


def reason_of(raw: str | bytes) -> str:
    with pytest.raises(InvalidEvent) as exc:
        parse_event(raw)
    return exc.value.reason


# --- accepted ----------------------------------------------------------------


def test_parses_str_and_bytes() -> None:
    text = body(data={"email": "a@example.com"})
    from_str = parse_event(text)
    assert isinstance(from_str, UserCreated)
    assert parse_event(text.encode()) == from_str
    assert parse_event(bytearray(text.encode())) == from_str


def test_parses_each_type() -> None:
    assert isinstance(parse_event(body("user.updated", data={"email": None})), UserUpdated)
    assert isinstance(parse_event(body("user.deleted")), UserDeleted)


def test_patch_nulls_survive_parsing() -> None:
    event = parse_event(body("user.updated", data={"email": None, "address": None}))
    assert isinstance(event, UserUpdated)
    assert event.data == ProfilePatch(email=None, address=None)
    assert event.data.model_dump(mode="json", exclude_unset=True) == {
        "email": None,
        "address": None,
    }


def test_body_at_size_limit_is_accepted() -> None:
    text = body("user.deleted")
    padded = text[:-1] + " " * (MAX_BODY_BYTES - len(text)) + "}"
    assert len(padded.encode()) == MAX_BODY_BYTES
    assert isinstance(parse_event(padded), UserDeleted)


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (MAX_DEPTH, "data.attributes.a: list items must be strings"),
        (MAX_DEPTH + 1, f"body nested too deeply (max depth {MAX_DEPTH})"),
    ],
)
def test_depth_limit(depth: int, expected: str) -> None:
    # The event object, data and attributes are 3 levels; arrays make up the rest.
    nested = "[" * (depth - 3) + "]" * (depth - 3)
    raw = body(data={"attributes": {"a": "HERE"}}).replace('"HERE"', nested)
    assert reason_of(raw) == expected


# --- rejected: table ---------------------------------------------------------

LONG_INT = "1" * 5000

FAILURES: list[tuple[str, str | bytes, str]] = [
    ("not utf-8", b'{"type": "\xff"}', "body is not valid UTF-8"),
    ("utf-16", '{"a": 1}'.encode("utf-16"), "body is not valid UTF-8"),
    ("lone surrogate in str body", '{"a": "\ud800"}', "body is not valid Unicode"),
    ("empty", "", "body is not valid JSON: expecting a value at line 1, column 1"),
    ("not json", "hello", "body is not valid JSON: expecting a value at line 1, column 1"),
    ("truncated", '{"type": "user.created"', "body is not valid JSON: expecting ','"),
    ("trailing data", "{} {}", "body is not valid JSON: extra data after the value"),
    ("single quotes", "{'a': 1}", "body is not valid JSON: expecting a property name"),
    ("byte order mark", "\ufeff{}", "body is not valid JSON: byte order mark"),
    ("raw control char", '{"a": "x\ny"}', "unescaped control character in a string"),
    ("array", "[]", "body must be a JSON object"),
    ("string", '"user.created"', "body must be a JSON object"),
    ("number", "42", "body must be a JSON object"),
    ("null", "null", "body must be a JSON object"),
    ("too large", " " * (MAX_BODY_BYTES + 1), f"body too large (max {MAX_BODY_BYTES} bytes)"),
    (
        "too large in bytes not chars",
        '{"a": "' + "é" * (MAX_BODY_BYTES // 2) + '"}',
        "body too large",
    ),
    ("deep arrays", "[" * 100_000, f"body nested too deeply (max depth {MAX_DEPTH})"),
    ("deep objects", '{"a":' * 50_000, "body nested too deeply"),
    ("depth 33", "[" * 33 + "]" * 33, "body nested too deeply"),
    ("huge int", '{"a": ' + LONG_INT + "}", "body contains an integer longer than 40 digits"),
    ("huge negative int", '{"a": -' + LONG_INT + "}", "integer longer than 40 digits"),
    ("NaN", '{"a": NaN}', "body contains NaN or Infinity"),
    ("Infinity", '{"a": Infinity}', "body contains NaN or Infinity"),
    ("-Infinity", '{"a": -Infinity}', "body contains NaN or Infinity"),
    ("float overflow", '{"a": 1e999}', "body contains a number out of range"),
    ("duplicate key", '{"type": "user.deleted", "type": "user.created"}', 'duplicate key "type"'),
    ("nested duplicate key", '{"data": {"email": "a", "email": "b"}}', 'duplicate key "email"'),
    ("type missing", json.dumps({"event_id": "e"}), "type: field required"),
    ("type not a string", body(type=1), "type: must be a string"),
    (
        "type unknown",
        body(type="user.renamed"),
        "type: unknown event type (expected user.created, user.updated or user.deleted)",
    ),
    (
        "schema_version 2",
        body(schema_version=2),
        "schema_version: unsupported schema version (supported: 1)",
    ),
    ("schema_version str", body(schema_version="1"), "schema_version: must be an integer"),
    ("event_id missing", body(event_id=None), "event_id: must be a string"),
    ("event_id empty", body(event_id=""), "event_id: must not be empty"),
    ("event_id long", body(event_id="x" * 129), "event_id: string too long (max 128)"),
    ("event_id control", body(event_id="a\u0000"), "event_id: must contain only printable ASCII"),
    (
        "user_id space",
        body(user_id="a b"),
        "user_id: must contain only printable ASCII characters without spaces",
    ),
    (
        "occurred_at number",
        body(occurred_at=1764324000),
        "occurred_at: must be a string (RFC 3339 timestamp)",
    ),
    (
        "occurred_at naive",
        body(occurred_at="2026-11-28T10:00:00"),
        "occurred_at: must be an RFC 3339 timestamp",
    ),
    ("unknown field", body(extra=1), "extra: unknown field"),
    (
        "data missing",
        json.dumps({k: v for k, v in envelope().items() if k != "data"}),
        "data: field required",
    ),
    ("data not object", body(data=[]), "data: must be an object"),
    ("data null in created", body(data=None), "data: must be an object"),
    ("email invalid", body(data={"email": "nope"}), "data.email: not a valid email address"),
    ("email null in created", body(data={"email": None}), "data.email: must not be null"),
    (
        "email_verified int",
        body(data={"email_verified": 1}),
        "data.email_verified: must be a boolean",
    ),
    (
        "phone",
        body(data={"phone_number": "0123"}),
        "data.phone_number: must be an E.164 phone number",
    ),
    ("given_name type", body(data={"given_name": 5}), "data.given_name: must be a string"),
    (
        "given_name long",
        body(data={"given_name": "x" * 257}),
        "data.given_name: string too long (max 256)",
    ),
    (
        "given_name control",
        body(data={"given_name": "a\u0007"}),
        "data.given_name: must not contain control characters",
    ),
    (
        "given_name surrogate",
        body(data={"given_name": "\ud800"}),
        "data.given_name: must not contain unpaired surrogates",
    ),
    (
        "birthdate",
        body(data={"birthdate": "2001-02-29"}),
        "data.birthdate: must be a calendar date in YYYY-MM-DD form",
    ),
    (
        "address extra",
        body(data={"address": {"planet": "Mars"}}),
        "data.address.planet: unknown field",
    ),
    (
        "locality newline",
        body(data={"address": {"locality": "a\nb"}}),
        "data.address.locality: must not contain control characters",
    ),
    ("attributes not object", body(data={"attributes": []}), "data.attributes: must be an object"),
    (
        "attribute name",
        body(data={"attributes": {"9lives": 1}}),
        "data.attributes[<name not shown>]: invalid attribute name",
    ),
    (
        "attribute dotted name",
        body(data={"attributes": {"gov.uk:x": {}}}),
        'data.attributes["gov.uk:x"]: must be a string, integer, number, boolean or list',
    ),
    (
        "attribute bool-ish",
        body(data={"attributes": {"shoe_size": "x" * 1025}}),
        "data.attributes.shoe_size: string too long (max 1024)",
    ),
    (
        "attribute int range",
        body(data={"attributes": {"n": 2**53 + 1}}),
        "data.attributes.n: integer out of range (max absolute value 9007199254740992)",
    ),
    (
        "attribute list",
        body(data={"attributes": {"tags": ["a", 1]}}),
        "data.attributes.tags: list items must be strings",
    ),
    (
        "attribute list item long",
        body(data={"attributes": {"tags": ["x" * 257]}}),
        "data.attributes.tags: list item too long (max 256)",
    ),
    (
        "too many attributes",
        body(data={"attributes": {f"a{i}": i for i in range(51)}}),
        "data.attributes: too many attributes (max 50)",
    ),
    (
        "attributes too large",
        body(data={"attributes": {f"a{i}": "x" * 1000 for i in range(17)}}),
        "data.attributes: too large (max 16384 bytes as compact JSON)",
    ),
    (
        "patch attribute null ok, bad value",
        body("user.updated", data={"attributes": {"a": None, "b": {}}}),
        "data.attributes.b: must be a string",
    ),
    (
        "deleted with data",
        body("user.deleted", data={"email": "a@example.com"}),
        "data: must be absent, null or an empty object",
    ),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [(raw, exp) for _, raw, exp in FAILURES], ids=[i for i, _, _ in FAILURES]
)
def test_rejected(raw: str | bytes, expected: str) -> None:
    reason = reason_of(raw)
    assert expected in reason
    assert len(reason) <= MAX_REASON_LENGTH


def test_several_errors_joined() -> None:
    reason = reason_of(body(event_id="", data={"email": "nope", "given_name": ""}))
    assert reason == (
        "event_id: must not be empty; data.email: not a valid email address; "
        "data.given_name: must not be empty"
    )


def test_unsupported_version_is_reported_alone() -> None:
    reason = reason_of(body(schema_version=2, data={"new_v2_field": 1}, event_id=""))
    assert reason == "schema_version: unsupported schema version (supported: 1)"


def test_reason_is_capped() -> None:
    data = {f"unknown_{i:03d}": 1 for i in range(200)}
    reason = reason_of(body(data=data))
    assert len(reason) <= MAX_REASON_LENGTH
    assert reason.startswith("data.unknown_000: unknown field; data.unknown_001: unknown field")
    assert reason.endswith(" more")


def test_a_key_that_is_not_a_name_is_not_repeated() -> None:
    # It may be the misplaced personal value itself: an email, a phone number, control bytes.
    for name in ["é\u0000\u202e" + "x" * 200, "ada@example.org", "+447700900123", "Ada L"]:
        reason = reason_of(body(**{name: 1}))
        assert reason == "[<name not shown>]: unknown field"
    assert reason_of(body(**{"nick-name": 1})) == '["nick-name"]: unknown field'
    assert reason_of(body(nickname=1)) == "nickname: unknown field"


def test_error_attributes_only_when_valid() -> None:
    with pytest.raises(InvalidEvent) as exc:
        parse_event(body("user.updated", data={"email": "nope"}))
    assert exc.value.event_id == "evt-1"
    assert exc.value.event_type == "user.updated"
    assert isinstance(exc.value, EventError)
    assert str(exc.value) == exc.value.reason == "data.email: not a valid email address"

    with pytest.raises(InvalidEvent) as exc:
        parse_event(body(event_id="bad\u0000id", type="user.nope"))
    assert exc.value.event_id is None
    assert exc.value.event_type is None

    with pytest.raises(InvalidEvent) as exc:
        parse_event(b"\xff")
    assert (exc.value.event_id, exc.value.event_type) == (None, None)


def test_no_chained_exception_carries_input() -> None:
    # A chained ValidationError or JSONDecodeError would print the input in tracebacks.
    for raw in (body(data={"email": "SECRET-PII"}), '{"a": "SECRET-PII"', b"\xffSECRET-PII"):
        with pytest.raises(InvalidEvent) as exc:
            parse_event(raw)
        assert exc.value.__cause__ is None
        assert exc.value.__context__ is None
        assert "SECRET-PII" not in "".join(traceback.format_exception(exc.value))


def test_validate_event_on_mapping() -> None:
    assert isinstance(validate_event(envelope("user.deleted")), UserDeleted)
    with pytest.raises(InvalidEvent, match=r"^event must be an object$"):
        validate_event(["not", "a", "mapping"])  # type: ignore[arg-type]


# --- privacy -----------------------------------------------------------------


def test_known_echoing_errors_do_not_echo() -> None:
    # Pydantic's own messages would quote these inputs.
    cases = [
        body(type="user.PII-TAG"),
        body(data={"email": "PII-EMAIL@@example.com"}),
        body(data={"email": "pii-email@PII-DOMAIN"}),
        body(data={"phone_number": "+PII-123"}),
        body(occurred_at="PII-2026-11-28"),
        body("user.deleted", data={"PII-KEY-VALUE": "PII-VALUE"}),
    ]
    for raw in cases:
        assert "PII" not in reason_of(raw)


MARKER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=12).map(
    lambda s: f"PII-{s}"
)
# Ways to wrap a marker so that the value becomes invalid (or stays valid).
WRAPS = st.sampled_from(
    [
        "{}",
        "{}\u0000",
        " {} ",
        "{}@",
        "{}@example.com",
        "+{}",
        "{}" * 30,
        "\n{}",
        "{}\ud800",
        "2026-11-28T{}Z",
    ]
)


def _string_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _string_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _string_paths(v, (*path, i))]
    return []


def _set(value: Any, path: tuple[Any, ...], new: Any) -> None:
    for key in path[:-1]:
        value = value[key]
    value[path[-1]] = new


TEMPLATES = [
    envelope(
        data={
            "email": "s",
            "phone_number": "s",
            "given_name": "s",
            "family_name": "s",
            "birthdate": "s",
            "address": {
                "street_address": "s",
                "locality": "s",
                "region": "s",
                "postal_code": "s",
                "country": "s",
            },
            "attributes": {"nickname": "s", "tags": ["s", "s"], "n": 1},
        }
    ),
    envelope(
        "user.updated",
        data={
            "email": "s",
            "given_name": None,
            "address": {"locality": "s"},
            "attributes": {"x": "s"},
        },
    ),
    envelope("user.deleted", data={"unexpected": "s"}),
    envelope("user.deleted", data="s"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    template=st.sampled_from(TEMPLATES),
    data=st.data(),
    make_invalid=st.sampled_from(["extra", "nonstring", "type", "version", "none"]),
)
def test_reason_never_contains_markers(
    template: dict[str, Any], data: st.DataObject, make_invalid: str
) -> None:
    event = json.loads(json.dumps(template))
    markers = []
    for path in _string_paths(event):
        if path == ("type",) and make_invalid != "type":
            continue  # keep the type valid so the deeper validation runs
        marker = data.draw(MARKER)
        markers.append(marker)
        _set(event, path, data.draw(WRAPS).replace("{}", marker))
    if make_invalid == "extra":
        event["unexpected_field"] = data.draw(MARKER)
        markers.append(event["unexpected_field"])
    elif make_invalid == "nonstring":
        event["occurred_at"] = 1764324000
    elif make_invalid == "version":
        event["schema_version"] = 99
    raw = json.dumps(event, ensure_ascii=data.draw(st.booleans()))
    # Every template gets a marker into occurred_at, so the event is always invalid.
    with pytest.raises(InvalidEvent) as exc:
        parse_event(raw)
    for marker in markers:
        assert marker not in exc.value.reason
        assert marker not in str(exc.value)
    if exc.value.event_id is not None:
        # Only a valid event id may be reported (it is meant to be logged).
        assert exc.value.event_id == event["event_id"]


def test_format_errors_for_direct_model_validation() -> None:
    # The worker re-validates merged profiles; it must log this, not str(ValidationError).
    with pytest.raises(ValidationError) as exc:
        Profile.model_validate({"email": "PII-x@", "given_name": "", "attributes": {"a": {}}})
    reason = format_errors(exc.value)
    assert reason == (
        "email: not a valid email address; given_name: must not be empty; "
        "attributes.a: must be a string, integer, number, boolean or list of strings"
    )
    assert "PII" in str(exc.value)  # why format_errors exists


def test_validate_event_accepts_enum_type_and_reports_plain_str() -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event(envelope(EventType.UPDATED, data={"email": 1}))
    assert exc.value.event_type == "user.updated"
    assert type(exc.value.event_type) is str


def test_public_api() -> None:
    import userstore.events as events

    for name in events.__all__:
        assert getattr(events, name) is not None
    assert {"parse_event", "InvalidEvent", "EventError", "Publisher", "PublishError"} <= set(
        events.__all__
    )
