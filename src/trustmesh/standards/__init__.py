"""The official ODPS, ODCS and OpenLineage JSON schemas, bundled so validation never touches the network."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path
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
def property_names(name: str) -> frozenset[str]:
    """Every key the schema names anywhere (under any `properties`): what a misspelt key was likely meant to be."""
    names: set[str] = set()
    stack: list[Any] = [load_schema(name)]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                names.update(node["properties"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return frozenset(names)


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


class ValidCache:
    """Remembers documents already found valid (by content hash), so unchanged files are not re-checked.

    Validation is a pure function of the schema and the document, so a hit is always safe. Kept in
    memory, and in `folder` when one is given (a mesh's `.trustmesh/cache`).
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.file = folder / "valid-documents.txt" if folder else None
        self.known: set[str] = set()
        if self.file and self.file.exists():
            self.known = set(self.file.read_text(encoding="utf-8").split())
        self.added: list[str] = []

    @staticmethod
    def key(name: str, document: Any) -> str:
        payload = json.dumps([name, _SCHEMA_VERSION, document], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:40]

    def add(self, key: str) -> None:
        if key not in self.known:
            self.known.add(key)
            self.added.append(key)

    def save(self) -> None:
        if not (self.file and self.added):
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with self.file.open("a", encoding="utf-8") as fh:
                fh.write("\n".join(self.added) + "\n")
            self.added = []
        except OSError:
            pass  # a read-only checkout only loses the speed-up


_SCHEMA_VERSION = "odps-1.0.0/odcs-3.1.0"
_memory = ValidCache()


def schema_errors(name: str, document: Any, cache: ValidCache | None = None) -> list[jsonschema.ValidationError]:
    """Every error of `document` against the schema, deepest first, without duplicates."""
    key = ValidCache.key(name, document)
    if key in _memory.known or (cache is not None and key in cache.known):
        return []
    errors = sorted(validator(name).iter_errors(document), key=lambda e: (list(e.absolute_path), e.message))
    if not errors:
        _memory.add(key)
        if cache is not None:
            cache.add(key)
    return [_most_specific(e) for e in errors]


def _most_specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For `oneOf`/`anyOf` failures, the sub-error that went deepest says most."""
    if error.context:
        return max((_most_specific(e) for e in error.context), key=lambda e: len(e.absolute_path))
    return error
