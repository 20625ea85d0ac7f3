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

# Descriptors are kilobytes (the demo's largest is 8 KB); parsing a few megabytes already takes seconds.
MAX_BYTES = 2 * 2**20
MAX_DEPTH = 64  # levels of nesting; a contract's nested object properties stay far below it
MAX_ALIAS_NODES = 100_000  # nodes that aliases may add to what the file writes out
_SIZE_CAP = 10**9  # expanded sizes are counted up to here, so the measure stays small integers


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
    parent: str | int | None = None
    for key in path:
        if isinstance(key, int):
            label = str(key)
            if isinstance(node, list) and 0 <= key < len(node) and isinstance(node[key], dict):
                item = node[key]
                # a person is known by their id (who signs in), not by their display name
                labels = ("id", "name") if parent == "people" else ("name", "property", "id", "term", "username")
                for name_key in labels:
                    if isinstance(item.get(name_key), str):
                        label = item[name_key]
                        break
            out += f"[{label}]"
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
        else:
            out += f".{key}" if out else str(key)
            node = node.get(key) if isinstance(node, dict) else None
        parent = key
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
    """Parse a YAML file; on failure return a Problem with the line, never raise.

    Untrusted text is bounded before it costs anything: the file's size is read up to `MAX_BYTES`, and the
    composed node graph is measured (nesting, aliases) before any Python object is built from it.
    """
    name = display or str(path)
    text, problem = _read_bounded(path, name)
    if problem is not None:
        return None, problem
    assert text is not None
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is not None:
                problem = _shape_problem(root, name)
                if problem is not None:
                    return None, problem
            data, problem = _construct(loader, root, name) if root is not None else (None, None)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "malformed YAML"
        return None, Problem(name, f"malformed YAML: {what}", line=line, fix="correct the YAML syntax at that line")
    except yaml.YAMLError as exc:
        return None, Problem(name, f"malformed YAML: {exc}", fix="correct the YAML syntax")
    if problem is not None:
        return None, problem
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


def _read_bounded(path: Path, name: str) -> tuple[str | None, Problem | None]:
    """The file's text, read no further than `MAX_BYTES` (a pipe or device never ends, a huge file is refused)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None, Problem(name, "file not found", fix=f"create {name}")
    except OSError as exc:
        return None, Problem(name, f"cannot read the file: {exc.strerror}", fix="check the file's permissions")
    if len(raw) > MAX_BYTES:
        return None, Problem(name, f"the file is larger than {MAX_BYTES // 2**20} MB, the most a descriptor may be",
                             fix="keep descriptors to what they describe: data belongs in data files, and a very "
                                 "wide contract can be split by product")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, Problem(name, f"not UTF-8 text ({exc.reason} at byte {exc.start})", fix="save the file as UTF-8")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _shape_problem(root: yaml.Node, name: str) -> Problem | None:
    """Refuse a node graph that costs more than its text: alias cycles, deep nesting, aliases expanding too far.

    An alias is a second reference to the anchored node object, so a few hundred bytes can stand for billions of
    nodes once walked. Each distinct node is measured once (post-order, no recursion): its expanded size and
    height, capped, so the measure itself stays linear in the file.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    refs: dict[int, int] = {}
    nodes: dict[int, yaml.Node] = {id(root): root}
    active = {id(root)}
    stack: list[tuple[yaml.Node, list[yaml.Node], int]] = [(root, _children(root), 0)]
    while stack:
        node, kids, at = stack[-1]
        if at == len(kids):
            stack.pop()
            active.discard(id(node))
            size[id(node)] = min(_SIZE_CAP, 1 + sum(size[id(k)] for k in kids))
            height[id(node)] = 1 + max((height[id(k)] for k in kids), default=0)
            continue
        stack[-1] = (node, kids, at + 1)
        child = kids[at]
        refs[id(child)] = refs.get(id(child), 0) + 1
        if id(child) in active:
            return Problem(name, "a YAML alias refers to the value that contains it, which never ends",
                           line=child.start_mark.line + 1, fix="write the value out instead of the alias")
        if id(child) not in size:
            nodes[id(child)] = child
            active.add(id(child))
            stack.append((child, _children(child), 0))
    if height[id(root)] > MAX_DEPTH:
        deepest = root
        for _ in range(MAX_DEPTH):
            deepest = max(_children(deepest), key=lambda n: height[id(n)])
        return Problem(name, f"values are nested {height[id(root)]} levels deep, more than the {MAX_DEPTH} a descriptor "
                       "may use", line=deepest.start_mark.line + 1, fix="flatten the structure")
    repeated = size[id(root)] - len(size)
    if repeated > MAX_ALIAS_NODES:
        shared = [n for key, n in nodes.items() if refs.get(key, 0) > 1]
        worst = max(shared, key=lambda n: size[id(n)] * (refs[id(n)] - 1))
        shown = f"{repeated:,}" if size[id(root)] < _SIZE_CAP else f"more than {_SIZE_CAP:,}"
        return Problem(name, f"YAML aliases expand the file by {shown} nodes, past the alias budget of "
                       f"{MAX_ALIAS_NODES:,}: the value anchored here stands for {size[id(worst)]:,} nodes and "
                       f"appears {refs[id(worst)]} times",
                       line=worst.start_mark.line + 1,
                       fix="write the repeated values out, or use fewer, smaller aliases")
    return None


def _construct(loader: Any, root: yaml.Node, name: str) -> tuple[Any, Problem | None]:
    """Python data from a measured node graph; a scalar YAML cannot turn into a value is a Problem with its line."""
    try:
        return loader.construct_document(root), None
    except (ValueError, OverflowError) as exc:
        constructor = yaml.constructor.SafeConstructor()
        seen: set[int] = set()
        pending = [root]
        while pending:
            node = pending.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.ScalarNode):
                try:
                    constructor.construct_object(node)
                except (ValueError, OverflowError, yaml.YAMLError) as bad:
                    shown = node.value if len(node.value) <= 40 else node.value[:40] + "…"
                    reason = str(bad).split(";")[0]  # not Python's advice on raising its own limits
                    return None, Problem(name, f"cannot read the value {shown!r}: {reason}",
                                         line=node.start_mark.line + 1,
                                         fix="quote it to keep it as text, or correct it")
            pending.extend(reversed(_children(node)))
        return None, Problem(name, f"cannot read a value: {exc}", fix="correct the value, or quote it to keep it as text")


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
