"""The generated JSON Schema files: up to date, valid, and plain JSON Schema."""

import json

from schemas import EVENTS, ModelResponse, generate


def test_json_schema_files_match_the_models():
    expected = generate.render()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in generate.JSON_DIR.glob("*.json")}
    assert set(on_disk) == {f"{e.__name__}.json" for e in EVENTS}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    assert not stale, f"out of date, run `python -m schemas.generate`: {stale}"


def test_generated_files_are_valid_json_schema_documents():
    for name, text in generate.render().items():
        doc = json.loads(text)
        assert doc["additionalProperties"] is False, name
        assert doc["properties"]["schema_version"]["const"] == 1, name


_JSON_SCHEMA_KEYWORDS = {
    "$schema", "$defs", "$ref", "title", "description", "default", "type", "const", "enum",
    "properties", "required", "additionalProperties", "items", "anyOf", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems",
    "maxItems", "minProperties", "maxProperties", "propertyNames", "patternProperties",
}


def _keywords(schema):
    """The keywords used anywhere in a schema (the names or patterns that properties,
    patternProperties and $defs map to schemas are not keywords)."""
    if isinstance(schema, list):
        return set().union(*(_keywords(s) for s in schema)) if schema else set()
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs"):
            found |= set().union(*(_keywords(v) for v in value.values())) if value else set()
        elif key not in ("default", "const", "enum"):
            found |= _keywords(value)
    return found


def test_generated_schemas_use_only_json_schema_keywords():
    for name, text in generate.render().items():
        unknown = _keywords(json.loads(text)) - _JSON_SCHEMA_KEYWORDS
        assert not unknown, f"{name}: not JSON Schema keywords: {sorted(unknown)}"


def test_json_schema_integers_are_bounded_to_64_bits():
    props = ModelResponse.model_json_schema()["properties"]
    assert props["tokens_in"] == {"minimum": 0, "maximum": 2**63 - 1, "title": "Tokens In",
                                  "type": "integer"}
