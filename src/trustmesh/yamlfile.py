"""YAML documents that remember where every value came from, for errors with line numbers."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trustmesh.errors import Problem

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
Path_ = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """A parsed YAML file: plain data plus a way to find the line of any path inside it."""

    file: str
    data: Any
    lines: dict[Path_, int]

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """1-based line of the value at `path`, or of its closest existing parent."""
        key = tuple(path)
        while key not in self.lines and key:
            key = key[:-1]
        return self.lines.get(key, 1)

    def readable_path(self, path: Iterable[str | int]) -> str:
        """`outputPorts[flights].customProperties[sql]` rather than `outputPorts.0.customProperties.1`."""
        return readable_path(self.data, path)

    def problem(self, path: Iterable[str | int], message: str, fix: str = "") -> Problem:
        path = list(path)
        return Problem(self.file, message, self.readable_path(path), self.line_of(path), fix)


def readable_path(data: Any, path: Iterable[str | int]) -> str:
    """Render a path into a document, naming list items by their `name`/`property`/`id` when they have one."""
    out = ""
    node = data
    for key in path:
        if isinstance(key, int):
            label = str(key)
            if isinstance(node, list) and 0 <= key < len(node) and isinstance(node[key], dict):
                item = node[key]
                for name_key in ("name", "property", "id", "term", "username"):
                    if isinstance(item.get(name_key), str):
                        label = item[name_key]
                        break
            out += f"[{label}]"
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
        else:
            out += f".{key}" if out else str(key)
            node = node.get(key) if isinstance(node, dict) else None
    return out


def _line_map(node: yaml.Node, path: Path_, lines: dict[Path_, int], problems: list[tuple[str, int]]) -> None:
    """Record the line of every key and item; note duplicate keys, which YAML loaders silently collapse."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append((f"duplicate key {key!r}", key_node.start_mark.line + 1))
            seen.add(key)
            _line_map(value_node, (*path, key), lines, problems)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), lines, problems)


def load_yaml(path: Path, display: str | None = None) -> tuple[YamlDocument | None, Problem | None]:
    """Parse a YAML file; on failure return a Problem with the line, never raise."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, Problem(name, "file not found", fix=f"create {name}")
    except UnicodeDecodeError as exc:
        return None, Problem(name, f"not UTF-8 text ({exc.reason} at byte {exc.start})", fix="save the file as UTF-8")
    except OSError as exc:
        return None, Problem(name, f"cannot read the file: {exc.strerror}", fix="check the file's permissions")
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "malformed YAML"
        return None, Problem(name, f"malformed YAML: {what}", line=line, fix="correct the YAML syntax at that line")
    except yaml.YAMLError as exc:
        return None, Problem(name, f"malformed YAML: {exc}", fix="correct the YAML syntax")
    if root is None or data is None:
        return None, Problem(name, "the file is empty", fix="fill it in (see `trustmesh new --help` for a template)")
    lines: dict[Path_, int] = {}
    duplicates: list[tuple[str, int]] = []
    _line_map(root, (), lines, duplicates)
    if duplicates:
        message, line = duplicates[0]
        return None, Problem(name, f"malformed YAML: {message}", line=line, fix="keep one of the two keys")
    if not isinstance(data, dict):
        return None, Problem(name, f"expected a mapping of keys, found {type(data).__name__}", line=1,
                             fix="start the file with `key: value` lines")
    return YamlDocument(name, _stringify_dates(data), lines), None


def _stringify_dates(node: Any) -> Any:
    """YAML turns `2024-01-02` into a date; the standards' JSON schemas expect the string as written."""
    if isinstance(node, dict):
        return {str(k): _stringify_dates(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_stringify_dates(v) for v in node]
    if isinstance(node, datetime.date):
        return node.isoformat()
    return node


def dump_yaml(data: Any) -> str:
    """Serialise plain data as block-style YAML with keys in the given order."""
    return str(yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100))
