"""YAML documents that remember where every value came from, for errors with line numbers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from trustmesh.errors import Problem


@dataclass
class YamlDocument:
    """A parsed YAML file: plain data plus a way to find the line of any path inside it."""

    file: str
    data: Any
    raw: Any

    def line_of(self, path: Iterable[str | int]) -> int | None:
        """1-based line of the value at `path`, or of its closest existing parent."""
        node = self.raw
        line = 1
        for key in path:
            if isinstance(node, CommentedMap) and key in node:
                line = node.lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
                line = node.lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        return line

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


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


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
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        raw = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "malformed YAML"
        return None, Problem(name, f"malformed YAML: {what}", line=line, fix="correct the YAML syntax at that line")
    except Exception as exc:  # ruamel raises a few non-marked errors, e.g. duplicate keys
        return None, Problem(name, f"malformed YAML: {exc}", fix="correct the YAML syntax")
    if raw is None:
        return None, Problem(name, "the file is empty", fix="fill it in (see `trustmesh new --help` for a template)")
    return YamlDocument(name, _plain(raw), raw), None


def dump_yaml(data: Any) -> str:
    """Serialise plain data as block-style YAML with keys in the given order."""
    import io

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()
