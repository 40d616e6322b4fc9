"""Unit tests for events.models: field rules, strictness and patch semantics."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from userstore.events import (
    EVENT_ADAPTER,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    Address,
    EventType,
    Profile,
    ProfilePatch,
    UserCreated,
    UserDeleted,
    UserUpdated,
    attributes,
    limits,
)


def envelope(event_type: str = "user.created", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": event_type,
        "event_id": "evt-1",
        "user_id": "urn:fdc:gov.uk:2022:AbC-123",
        "occurred_at": "2026-11-28T10:00:00Z",
    }
    if event_type != "user.deleted":
        event["data"] = {}
    event.update(overrides)
    return event


def error_types(exc: pytest.ExceptionInfo[ValidationError]) -> set[str]:
    return {e["type"] for e in exc.value.errors()}


def test_constants() -> None:
    assert SCHEMA_VERSION == 1
    assert set(SUPPORTED_SCHEMA_VERSIONS) == {1}
    assert limits.MAX_ATTRIBUTES == 50
    assert limits.MAX_ATTRIBUTES_JSON_BYTES == 16 * 1024
    assert limits.MAX_ATTRIBUTE_INTEGER == 2**53
    assert [t.value for t in EventType] == ["user.created", "user.updated", "user.deleted"]


def test_full_created_event() -> None:
    event = EVENT_ADAPTER.validate_python(
        envelope(
            data={
                "email": "Jane.Doe@Example.COM",
                "email_verified": True,
                "phone_number": "+447700900123",
                "phone_number_verified": False,
                "given_name": "Jane",
                "family_name": "Doe",
                "birthdate": "1990-02-28",
                "address": {
                    "street_address": "1 High Street\nFlat 2",
                    "locality": "London",
                    "region": "Greater London",
                    "postal_code": "SW1A 1AA",
                    "country": "GB",
                },
                "attributes": {
                    "shoe_size": 42,
                    "height_m": 1.72,
                    "newsletter": True,
                    "nickname": "JD",
                    "gov.uk:tags": ["a", "b"],
                },
            }
        )
    )
    assert isinstance(event, UserCreated)
    assert event.type is EventType.CREATED
    assert event.schema_version == 1
    assert event.data.email == "Jane.Doe@Example.COM"  # stored as given, not normalized
    assert event.data.address == Address(
        street_address="1 High Street\nFlat 2",
        locality="London",
        region="Greater London",
        postal_code="SW1A 1AA",
        country="GB",
    )
    attributes = event.data.attributes
    assert attributes is not None
    assert type(attributes["shoe_size"]) is int
    assert type(attributes["height_m"]) is float
    assert attributes["newsletter"] is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T10:00:00Z", datetime(2026, 11, 28, 10, tzinfo=UTC)),
        ("2026-11-28t10:00:00z", datetime(2026, 11, 28, 10, tzinfo=UTC)),
        ("2026-11-28T10:00:00.123+01:00", datetime(2026, 11, 28, 9, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-28T10:00:00.123456789-05:30", datetime(2026, 11, 28, 15, 30, 0, 123456, UTC)),
        ("2026-11-28T10:00:00-00:00", datetime(2026, 11, 28, 10, tzinfo=UTC)),
    ],
)
def test_occurred_at_accepted_and_normalized_to_utc(text: str, expected: datetime) -> None:
    event = EVENT_ADAPTER.validate_python(envelope(occurred_at=text))
    assert event.occurred_at == expected
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-28T10:00:00",  # naive
        "2026-11-28 10:00:00Z",
        "2026-11-28",
        "2026-11-28T10:00Z",
        "2026-11-28T10:00:00+0100",
        "2026-11-28T10:00:00+01",
        "2026-13-28T10:00:00Z",
        "2026-11-28T10:00:00+24:00",
        "0001-01-01T00:00:00+01:00",  # overflows when normalized to UTC
        "2026-11-28T10:00:00Z\n",
        "١٩٩٠-11-28T10:00:00Z",  # non-ASCII digits
        1764324000,
        1764324000.5,
        True,
        None,
    ],
)
def test_occurred_at_rejected(value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        EVENT_ADAPTER.validate_python(envelope(occurred_at=value))
    assert error_types(exc) <= {"timestamp_type", "timestamp_format"}


def test_occurred_at_from_python_datetime() -> None:
    plus2 = timezone(timedelta(hours=2))
    event = UserDeleted(
        event_id="e", user_id="u", occurred_at=datetime(2026, 11, 28, 12, tzinfo=plus2)
    )
    assert event.occurred_at == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert event.model_dump(mode="json")["occurred_at"] == "2026-11-28T10:00:00Z"
    with pytest.raises(ValidationError) as exc:
        UserDeleted(event_id="e", user_id="u", occurred_at=datetime(2026, 11, 28, 12))
    assert error_types(exc) == {"timestamp_naive"}


@pytest.mark.parametrize(
    ("micro", "text"),
    [(0, "10:00:00Z"), (123000, "10:00:00.123Z"), (123456, "10:00:00.123456Z")],
)
def test_occurred_at_serialization(micro: int, text: str) -> None:
    event = UserDeleted(
        event_id="e", user_id="u", occurred_at=datetime(2026, 11, 28, 10, 0, 0, micro, UTC)
    )
    assert event.model_dump(mode="json")["occurred_at"] == f"2026-11-28T{text}"


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("event_id", "a b c", True),
        ("event_id", "x" * 128, True),
        ("event_id", "x" * 129, False),
        ("event_id", "", False),
        ("event_id", "tab\there", False),
        ("event_id", "é", False),
        ("event_id", 1, False),
        ("user_id", "urn:fdc:gov.uk:2022:AbC-123", True),
        ("user_id", "!~", True),
        ("user_id", "a b", False),
        ("user_id", "x" * 129, False),
        ("user_id", "", False),
        ("user_id", "ü", False),
        ("schema_version", 1, True),
        ("schema_version", 2, False),
        ("schema_version", 0, False),
        ("schema_version", "1", False),
        ("schema_version", True, False),
        ("schema_version", 1.0, False),
    ],
)
def test_envelope_fields(field: str, value: object, ok: bool) -> None:
    event = envelope(**{field: value})
    if ok:
        assert getattr(EVENT_ADAPTER.validate_python(event), field) == value
    else:
        with pytest.raises(ValidationError):
            EVENT_ADAPTER.validate_python(event)


def test_unsupported_schema_version_error_type() -> None:
    with pytest.raises(ValidationError) as exc:
        UserDeleted.model_validate(envelope("user.deleted", schema_version=2))
    assert error_types(exc) == {"unsupported_schema_version"}


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("email", "a@example.com", True),
        ("email", "ÄÖ@exämple.de", True),
        ("email", "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + ".com", True),
        ("email", "not-an-email", False),
        ("email", "a@b", False),
        ("email", "Jane <a@example.com>", False),
        ("email", "a@example.com\x00", False),
        ("email", "", False),
        ("email_verified", True, True),
        ("email_verified", 1, False),
        ("email_verified", "true", False),
        ("phone_number", "+447700900123", True),
        ("phone_number", "+12", True),
        ("phone_number", "+123456789012345", True),
        ("phone_number", "+1234567890123456", False),
        ("phone_number", "+0123", False),
        ("phone_number", "447700900123", False),
        ("phone_number", "+44 7700 900123", False),
        ("phone_number", "+447700900123\n", False),
        ("phone_number", 447700900123, False),
        ("given_name", "José", True),
        ("given_name", "x" * 256, True),
        ("given_name", "x" * 257, False),
        ("given_name", "", False),
        ("given_name", "a\nb", False),
        ("given_name", "a\x7fb", False),
        ("given_name", "a\x85b", False),
        ("family_name", "\ud800", False),
        ("birthdate", "2000-02-29", True),
        ("birthdate", "2001-02-29", False),
        ("birthdate", "2001-2-3", False),
        ("birthdate", "20010203", False),
        ("birthdate", "0000-01-01", False),
        ("birthdate", "\uff12\uff10\uff10\uff11-\uff10\uff12-\uff10\uff13", False),
        ("birthdate", 20010203, False),
    ],
)
def test_profile_fields(field: str, value: object, ok: bool) -> None:
    if ok:
        profile = Profile.model_validate({field: value})
        assert getattr(profile, field) == value
        assert ProfilePatch.model_validate({field: value}).model_dump(exclude_unset=True) == {
            field: value
        }
    else:
        with pytest.raises(ValidationError):
            Profile.model_validate({field: value})
        with pytest.raises(ValidationError):
            ProfilePatch.model_validate({field: value})


def test_email_length_limit() -> None:
    local = "a" * 64
    domain = ".".join(["b" * 63, "c" * 63, "d" * 57]) + ".com"
    assert len(f"{local}@{domain}") == 254
    Profile(email=f"{local}@{domain}")
    with pytest.raises(ValidationError) as exc:
        Profile(email=f"{local}@{domain}x")
    assert error_types(exc) == {"string_too_long"}


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("street_address", "1 High St\r\nFlat 2", True),
        ("street_address", "x" * 1024, True),
        ("street_address", "x" * 1025, False),
        ("street_address", "a\tb", False),
        ("street_address", "", False),
        ("locality", "x" * 256, True),
        ("locality", "x" * 257, False),
        ("locality", "a\nb", False),
        ("country", "", False),
        ("postal_code", 12345, False),
    ],
)
def test_address_fields(field: str, value: object, ok: bool) -> None:
    if ok:
        assert getattr(Address.model_validate({field: value}), field) == value
    else:
        with pytest.raises(ValidationError):
            Address.model_validate({field: value})


@pytest.mark.parametrize(
    "value",
    ["1", "", "multi\nline\ttext", 0, -(2**53), 2**53, 1.5, -0.0, True, False, [], ["a"] * 50],
)
def test_attribute_values_accepted_unchanged(value: object) -> None:
    profile = Profile.model_validate({"attributes": {"a": value}})
    assert profile.attributes is not None
    stored = profile.attributes["a"]
    assert stored == value
    assert type(stored) is type(value)  # strict: never coerced


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (2**53 + 1, "attribute_integer_range"),
        (-(2**53) - 1, "attribute_integer_range"),
        (float("nan"), "attribute_number_finite"),
        (float("inf"), "attribute_number_finite"),
        ("x" * 1025, "string_too_long"),
        ("nul\x00", "control_characters"),
        (["x"] * 51, "too_long"),
        (["x" * 257], "attribute_list_item_too_long"),
        ([1], "attribute_list_item_type"),
        ([None], "attribute_list_item_type"),
        (["a\nb"], "control_characters"),
        ({"nested": 1}, "attribute_value_type"),
        (("a",), "attribute_value_type"),
        (None, "attribute_value_type"),
    ],
)
def test_attribute_values_rejected(value: object, error: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Profile.model_validate({"attributes": {"a": value}})
    assert error_types(exc) == {error}


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("shoe_size", True),
        ("urn:gov.uk:x-y_z", True),
        ("A" + "b" * 63, True),
        ("A" + "b" * 64, False),
        ("1abc", False),
        ("_abc", False),
        ("", False),
        ("a b", False),
        ("añ", False),
        ("a/b", False),
    ],
)
def test_attribute_names(name: str, ok: bool) -> None:
    if ok:
        Profile.model_validate({"attributes": {name: 1}})
    else:
        with pytest.raises(ValidationError) as exc:
            Profile.model_validate({"attributes": {name: 1}})
        assert error_types(exc) == {"attribute_name"}


def test_attribute_count_limit() -> None:
    Profile(attributes={f"a{i}": i for i in range(limits.MAX_ATTRIBUTES)})
    with pytest.raises(ValidationError) as exc:
        Profile(attributes={f"a{i}": i for i in range(limits.MAX_ATTRIBUTES + 1)})
    assert error_types(exc) == {"too_many_attributes"}


def test_attribute_size_limit() -> None:
    base = {f"k{i:02d}": "x" * 1000 for i in range(16)}
    filler = limits.MAX_ATTRIBUTES_JSON_BYTES - attributes.attributes_json_size({**base, "zz": ""})
    exact = {**base, "zz": "x" * filler}
    assert attributes.attributes_json_size(exact) == limits.MAX_ATTRIBUTES_JSON_BYTES
    Profile(attributes=exact)
    with pytest.raises(ValidationError) as exc:
        Profile(attributes={**base, "zz": "x" * (filler + 1)})
    assert error_types(exc) == {"attributes_too_large"}
    # Bytes, not characters: "é" is two bytes in UTF-8.
    wide = {f"k{i}": "é" * 1000 for i in range(10)}
    assert attributes.attributes_json_size(wide) > limits.MAX_ATTRIBUTES_JSON_BYTES
    with pytest.raises(ValidationError):
        Profile(attributes=wide)


@pytest.mark.parametrize(
    "field",
    [
        "email",
        "email_verified",
        "phone_number",
        "phone_number_verified",
        "given_name",
        "family_name",
        "birthdate",
        "address",
        "attributes",
    ],
)
def test_profile_rejects_null_patch_accepts_it(field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Profile.model_validate({field: None})
    assert error_types(exc) == {"null_not_allowed"}
    patch = ProfilePatch.model_validate({field: None})
    assert patch.model_dump(mode="json", exclude_unset=True) == {field: None}


def test_address_rejects_null_patch_accepts_it() -> None:
    with pytest.raises(ValidationError):
        Address.model_validate({"country": None})
    patch = ProfilePatch.model_validate({"address": {"country": None, "locality": "Leeds"}})
    assert patch.model_dump(mode="json", exclude_unset=True) == {
        "address": {"country": None, "locality": "Leeds"}
    }


def test_patch_keeps_absent_and_null_apart() -> None:
    patch = ProfilePatch.model_validate(
        {
            "email_verified": None,
            "given_name": "Jo",
            "attributes": {"remove_me": None, "set_me": [], "zero": 0},
        }
    )
    assert patch.model_dump(mode="json", exclude_unset=True) == {
        "email_verified": None,
        "given_name": "Jo",
        "attributes": {"remove_me": None, "set_me": [], "zero": 0},
    }
    # Pydantic's == ignores which fields were set; for a patch that is the meaning.
    assert ProfilePatch(email=None) != ProfilePatch()
    assert ProfilePatch(email=None) == ProfilePatch.model_validate({"email": None})
    assert ProfilePatch() == ProfilePatch.model_validate({})


def test_patch_attribute_limits() -> None:
    removals = {f"old{i}": None for i in range(limits.MAX_ATTRIBUTES)}
    additions = {f"new{i}": i for i in range(limits.MAX_ATTRIBUTES)}
    ProfilePatch(attributes={**removals, **additions})
    with pytest.raises(ValidationError):
        ProfilePatch(attributes={**removals, **additions, "one_more": 1})
    with pytest.raises(ValidationError):
        ProfilePatch(attributes={**additions, "one_more": 1})
    with pytest.raises(ValidationError):
        ProfilePatch(attributes={f"k{i}": "é" * 1000 for i in range(10)})


@pytest.mark.parametrize("data", [None, {}, "absent"])
def test_deleted_data_variants(data: object) -> None:
    event = envelope("user.deleted") if data == "absent" else envelope("user.deleted", data=data)
    parsed = EVENT_ADAPTER.validate_python(event)
    assert isinstance(parsed, UserDeleted)
    assert parsed.data is None


@pytest.mark.parametrize("data", [{"email": "a@example.com"}, [], "", 0, False])
def test_deleted_data_rejected(data: object) -> None:
    with pytest.raises(ValidationError) as exc:
        EVENT_ADAPTER.validate_python(envelope("user.deleted", data=data))
    assert error_types(exc) == {"deleted_data"}


@pytest.mark.parametrize("event_type", ["user.created", "user.updated"])
def test_data_required(event_type: str) -> None:
    event = envelope(event_type)
    del event["data"]
    with pytest.raises(ValidationError) as exc:
        EVENT_ADAPTER.validate_python(event)
    assert error_types(exc) == {"missing"}


@pytest.mark.parametrize(
    ("event_type", "cls"),
    [("user.created", UserCreated), ("user.updated", UserUpdated), ("user.deleted", UserDeleted)],
)
def test_discriminated_union(event_type: str, cls: type) -> None:
    event = EVENT_ADAPTER.validate_json(json.dumps(envelope(event_type)))
    assert type(event) is cls


def test_extra_fields_forbidden_everywhere() -> None:
    for extra in (
        envelope(surprise=1),
        envelope(data={"surprise": 1}),
        envelope(data={"address": {"surprise": 1}}),
        envelope("user.updated", data={"address": {"surprise": None}}),
    ):
        with pytest.raises(ValidationError) as exc:
            EVENT_ADAPTER.validate_python(extra)
        assert error_types(exc) == {"extra_forbidden"}


def test_models_are_frozen() -> None:
    event = UserDeleted(event_id="e", user_id="u", occurred_at="2026-11-28T10:00:00Z")
    with pytest.raises(ValidationError):
        event.user_id = "other"  # type: ignore[misc]


def test_type_defaults_for_python_callers() -> None:
    event = UserCreated(
        event_id="e", user_id="u", occurred_at="2026-11-28T10:00:00Z", data=Profile()
    )
    assert event.type == "user.created"
    assert "type" not in event.model_fields_set
