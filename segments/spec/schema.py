"""JSON Schemas of the spec files, generated from the grammar the parser checks keys with.

Editors read them (``# yaml-language-server: $schema=...`` at the top of a spec) to
complete keys, show each key's documentation and flag a wrong key or value while
typing. ``segments validate`` stays the judge: the schemas cannot know the
catalog's attributes or the other specs, only the shape of each file.

Examples:
    >>> schema = document_schema("segment")
    >>> schema["required"], schema["properties"]["holdout"]["maximum"]
    (['name'], 50)
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from segments.spec import grammar as g

DRAFT = "http://json-schema.org/draft-07/schema#"
FILE_NAMES = {
    "segment": "segment.schema.json", "catalog": "catalog.schema.json", "traits": "traits.schema.json",
    "tests": "tests.schema.json",
}


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


def value_schema(value: g.Value) -> dict[str, object]:
    """The JSON Schema of one value of the grammar.

    >>> value_schema(g.OneOrMany(g.Text()))
    {'anyOf': [{'type': 'string'}, {'type': 'array', 'items': {'type': 'string'}, 'minItems': 1}]}
    """
    if isinstance(value, g.Text):
        out: dict[str, object] = {"type": "string"}
        if value.pattern is not None:
            out["pattern"] = _anchored(value.pattern)
        if value.choices is not None:
            out["enum"] = list(value.choices)
        return out
    if isinstance(value, g.Prose):
        return {"type": ["string", "number", "boolean"]}
    if isinstance(value, g.Number):
        bounds = {"minimum": value.minimum, "maximum": value.maximum}
        return {"type": "number", **{k: v for k, v in bounds.items() if v is not None}}
    if isinstance(value, g.Integer):
        return {"type": "integer", "minimum": value.minimum}
    if isinstance(value, g.Boolean):
        return {"const": True} if value.only_true else {"type": "boolean"}
    if isinstance(value, (g.Duration, g.Time, g.Cron)):
        pattern = {g.Duration: g.DURATION_PATTERN, g.Time: g.TIME_PATTERN, g.Cron: g.CRON_PATTERN}[type(value)]
        return {"type": "string", "pattern": _anchored(pattern)}
    if isinstance(value, g.ListOf):
        out = {"type": "array", "items": value_schema(value.item)}
        if value.min_items:
            out["minItems"] = value.min_items
        if value.max_items is not None:
            out["maxItems"] = value.max_items
        return out
    if isinstance(value, g.OneOrMany):
        item = value_schema(value.item)
        return {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}
    if isinstance(value, g.MapOf):
        return {
            "type": "object",
            "propertyNames": {"pattern": _anchored(value.key_pattern)},
            "additionalProperties": value_schema(value.value),
        }
    if isinstance(value, g.Either):
        return {"anyOf": [value_schema(option) for option in value.options]}
    if isinstance(value, g.Ref):
        return {"$ref": f"#/definitions/{value.name}"}
    return {}


def _key_schema(key: g.Key) -> dict[str, object]:
    schema = value_schema(key.value)
    if "$ref" in schema:  # draft-07 ignores a $ref's siblings: wrap it to keep the doc
        return {"description": key.doc, "allOf": [schema]}
    return {"description": key.doc, **schema}


def mapping_schema(shape: g.Mapping) -> dict[str, object]:
    """A mapping: its keys with their docs, required keys, exclusive groups."""
    out: dict[str, object] = {
        "type": "object",
        "description": shape.doc,
        "properties": {key.name: _key_schema(key) for key in shape.keys},
        "additionalProperties": False if shape.other is None else value_schema(shape.other),
    }
    required = [key.name for key in shape.keys if key.required]
    if required:
        out["required"] = required
    rules: list[dict[str, object]] = []
    for group in shape.groups:
        if group.exactly_one:
            rules.append({"oneOf": [{"required": [name]} for name in group.keys]})
        else:
            pairs = [{"required": [a, b]} for a, b in combinations(group.keys, 2)]
            rules.append({"not": {"anyOf": pairs}})
    if shape.needs_one_of:
        rules.append({"anyOf": [{"required": [name]} for name in shape.needs_one_of]})
    if len(rules) == 1:
        out.update(rules[0])
    elif rules:
        out["allOf"] = rules
    return out


def shape_schema(shape: g.Mapping | g.OneOf) -> dict[str, object]:
    if isinstance(shape, g.OneOf):
        return {"description": shape.doc, "oneOf": [mapping_schema(option) for option in shape.options]}
    return mapping_schema(shape)


def _refs(value: object) -> set[str]:
    """The names every ``$ref`` under ``value`` points to."""
    if isinstance(value, dict):
        found = {value["$ref"].rsplit("/", 1)[1]} if "$ref" in value else set()
        return found.union(*(_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value))
    return set()


def document_schema(document: str) -> dict[str, object]:
    """The complete schema of one kind of file: ``segment``, ``catalog`` or ``traits``."""
    root = mapping_schema(g.DOCUMENTS[document])
    definitions: dict[str, object] = {}
    pending = _refs(root)
    while pending:
        name = pending.pop()
        definitions[name] = shape_schema(g.SHAPES[name])
        pending |= _refs(definitions[name]) - set(definitions)
    schema: dict[str, object] = {
        "$schema": DRAFT,
        "title": g.DOCUMENTS[document].doc,
        **root,
    }
    if definitions:
        schema["definitions"] = dict(sorted(definitions.items()))
    return schema


def render(document: str) -> str:
    """The schema as the committed file holds it: stable, indented JSON."""
    return json.dumps(document_schema(document), indent=2, ensure_ascii=False) + "\n"


def generated_files() -> dict[Path, str]:
    """File name -> content, for every schema.

    >>> sorted(str(path) for path in generated_files())
    ['catalog.schema.json', 'segment.schema.json', 'tests.schema.json', 'traits.schema.json']
    """
    return {Path(name): render(document) for document, name in FILE_NAMES.items()}
