"""The published JSON Schemas: committed files are current and describe the models."""

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from userstore.events import (
    Address,
    AddressPatch,
    InvalidEvent,
    Profile,
    ProfilePatch,
    SealedEvent,
    UserCreated,
    UserDeleted,
    UserUpdated,
    serialize,
)
from userstore.events.parse import parse_event
from userstore.events.schema import SCHEMA_DIR, generate, main, render

FILES = {
    "user-event.v1.schema.json",
    "user.created.v1.schema.json",
    "user.updated.v1.schema.json",
    "user.deleted.v1.schema.json",
    "user-event.sealed.v1.schema.json",
}

MODELS_BY_FILE = [
    ("user.created.v1.schema.json", UserCreated),
    ("user.updated.v1.schema.json", UserUpdated),
    ("user.deleted.v1.schema.json", UserDeleted),
]
SEALED_FILE = ("user-event.sealed.v1.schema.json", SealedEvent)

EXAMPLES = [
    {
        "type": "user.created",
        "event_id": "evt-1",
        "user_id": "urn:fdc:gov.uk:2022:AbC-123",
        "occurred_at": "2026-11-28T10:00:00Z",
        "data": {
            "email": "jane@example.com",
            "email_verified": True,
            "phone_number": "+447700900123",
            "given_name": "Jane",
            "birthdate": "1990-01-31",
            "address": {"street_address": "1 High St\nFlat 2", "country": "GB"},
            "attributes": {"n": 1, "f": 1.5, "b": False, "s": "x", "l": ["a"]},
        },
    },
    {
        "type": "user.updated",
        "schema_version": 1,
        "event_id": "evt 2",
        "user_id": "u",
        "occurred_at": "2026-11-28T10:00:00.5+01:00",
        "data": {"email": None, "address": {"locality": None}, "attributes": {"n": None}},
    },
    {
        "type": "user.deleted",
        "event_id": "evt-3",
        "user_id": "u",
        "occurred_at": "2026-11-28T10:00:00Z",
    },
    {
        "type": "user.deleted",
        "event_id": "evt-4",
        "user_id": "u",
        "occurred_at": "2026-11-28T10:00:00Z",
        "data": {},
    },
]

INVALID = [
    {**EXAMPLES[2], "type": "user.renamed"},
    {**EXAMPLES[2], "unknown": 1},
    {**EXAMPLES[2], "schema_version": 2},
    {**EXAMPLES[2], "occurred_at": 1764324000},
    {**EXAMPLES[2], "occurred_at": "2026-11-28T10:00:00"},
    {**EXAMPLES[2], "user_id": "a b"},
    {**EXAMPLES[0], "data": {"email": None}},
    {**EXAMPLES[0], "data": {"attributes": {"9x": 1}}},
    {**EXAMPLES[0], "data": {"attributes": {"x": {}}}},
    {**EXAMPLES[0], "data": {"given_name": "a\u0000"}},
    {**EXAMPLES[1], "data": {"email_verified": "yes"}},
    {**EXAMPLES[3], "data": {"x": 1}},
    {k: v for k, v in EXAMPLES[2].items() if k != "type"},
]


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text("utf-8"))
    return result


def test_committed_files_are_current() -> None:
    generated = generate()
    assert set(generated) == FILES
    for name, schema in generated.items():
        assert (SCHEMA_DIR / name).read_text("utf-8") == render(schema), (
            f"{name} is stale: run python -m userstore.events.schema"
        )
    assert main(["--check"]) == 0


def test_render_is_stable() -> None:
    schema = generate()["user-event.v1.schema.json"]
    text = render(schema)
    assert text.endswith("}\n")
    assert text == render(json.loads(text))
    assert schema["$id"] == "urn:userstore:schema:user-event.v1.schema.json"
    assert schema["title"]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--dir", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--dir", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == FILES
    assert main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "user.created.v1.schema.json").write_text("{}\n", "utf-8")
    assert main(["--check", "--dir", str(tmp_path)]) == 1


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/$defs/")
    resolved: dict[str, Any] = root["$defs"][name]
    return resolved


def _assert_matches_model(
    schema: dict[str, Any], model: type[BaseModel], root: dict[str, Any]
) -> None:
    schema = _resolve(schema, root)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(model.model_fields)
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    if "type" in model.model_fields:
        required.add("type")  # defaulted for Python callers, required on the wire
    assert set(schema.get("required", [])) == required


NESTED: dict[type[BaseModel], dict[str, type[BaseModel]]] = {
    UserCreated: {"data": Profile},
    UserUpdated: {"data": ProfilePatch},
    Profile: {"address": Address},
    ProfilePatch: {"address": AddressPatch},
}


def _assert_tree(schema: dict[str, Any], model: type[BaseModel], root: dict[str, Any]) -> None:
    _assert_matches_model(schema, model, root)
    properties = _resolve(schema, root)["properties"]
    for field, nested in NESTED.get(model, {}).items():
        prop = properties[field]
        branches = [b for b in prop.get("anyOf", [prop]) if b != {"type": "null"}]
        assert len(branches) == 1
        _assert_tree(branches[0], nested, root)


@pytest.mark.parametrize(("name", "model"), MODELS_BY_FILE)
def test_schema_properties_match_models(name: str, model: type[BaseModel]) -> None:
    schema = load(name)
    _assert_tree(schema, model, schema)
    union = load("user-event.v1.schema.json")
    assert union["discriminator"]["propertyName"] == "type"
    type_value = model.model_fields["type"].default.value
    ref = union["discriminator"]["mapping"][type_value]
    _assert_tree({"$ref": ref}, model, union)


def test_full_profile_is_not_nullable_patch_is() -> None:
    union = load("user-event.v1.schema.json")
    profile = union["$defs"]["Profile"]["properties"]
    patch = union["$defs"]["ProfilePatch"]["properties"]
    for field in Profile.model_fields:
        assert "null" not in json.dumps(profile[field]), field
        assert {"type": "null"} in patch[field]["anyOf"], field


def test_examples_are_valid_events() -> None:
    for example in EXAMPLES:
        parse_event(json.dumps(example))
    for example in INVALID:
        with pytest.raises(InvalidEvent):
            parse_event(json.dumps(example))


def test_examples_against_schema() -> None:
    """Validate with jsonschema when it is installed (it is not a dependency of ours)."""
    if importlib.util.find_spec("jsonschema") is None:
        # Without a validator, at least the structure must match the models.
        for name, model in MODELS_BY_FILE:
            _assert_tree(load(name), model, load(name))
        return
    import jsonschema

    union = load("user-event.v1.schema.json")
    jsonschema.Draft202012Validator.check_schema(union)
    validator = jsonschema.Draft202012Validator(union)
    by_type = {
        t: jsonschema.Draft202012Validator(load(f"{t}.v1.schema.json"))
        for t in ("user.created", "user.updated", "user.deleted")
    }
    for example in EXAMPLES:
        validator.validate(example)
        by_type[example["type"]].validate(example)
        # What the publisher writes is valid too.
        validator.validate(json.loads(serialize(parse_event(json.dumps(example)))))
    for example in INVALID:
        assert not validator.is_valid(example), example


def test_sealed_schema_matches_model() -> None:
    name, model = SEALED_FILE
    schema = load(name)
    _assert_matches_model(schema, model, schema)
    assert schema["required"][:1] == ["type"] or "type" in schema["required"]
    assert "data" not in schema["properties"]
