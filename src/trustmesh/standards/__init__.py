"""The official ODPS, ODCS and OpenLineage JSON schemas, bundled so validation never touches the network."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

ODPS = "odps-json-schema-v1.0.0.json"
ODCS = "odcs-json-schema-v3.1.0.json"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load one bundled schema by file name (e.g. `ODCS`, or `openlineage/OpenLineage.json`)."""
    with resources.files(__package__).joinpath(name).open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """A validator for one bundled schema, with every OpenLineage `$id` resolved locally."""
    schema = load_schema(name)
    registry: Registry = Registry()
    base = resources.files(__package__).joinpath("openlineage")
    for entry in base.iterdir():
        if entry.name.endswith(".json"):
            doc = json.loads(entry.read_text(encoding="utf-8"))
            if "$id" in doc:
                registry = registry.with_resource(doc["$id"], Resource.from_contents(doc))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def schema_errors(name: str, document: Any) -> list[jsonschema.ValidationError]:
    """Every error of `document` against the schema, deepest first, without duplicates."""
    errors = sorted(validator(name).iter_errors(document), key=lambda e: (list(e.absolute_path), e.message))
    return [best for best in (_most_specific(e) for e in errors)]


def _most_specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For `oneOf`/`anyOf` failures, the sub-error that went deepest says most."""
    if error.context:
        return max((_most_specific(e) for e in error.context), key=lambda e: len(e.absolute_path))
    return error
