"""What changed between two versions of an ODCS contract, and whether it breaks the dataset's current consumers.

Each rule is a plain function from the old and the new element (and its path) to `Change`s; the rules for a
contract, a schema object and a column are three tuples, so a platform can add its own.

    >>> diff = diff_contracts(old_doc, new_doc)
    >>> [c.path for c in diff.changes if c.kind == "breaking"]
    ['schema[flights].properties[dep_delay].logicalType']
    >>> diff.requires_major_bump()
    True
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trustmesh.descriptors.loader import custom_properties
from trustmesh.descriptors.models import IM8_LEVELS, SENSITIVITIES

Kind = Literal["breaking", "compatible"]
BREAKING: Kind = "breaking"
COMPATIBLE: Kind = "compatible"


@dataclass(frozen=True)
class Change:
    """One difference: where it is, what changed, and why it does or does not break consumers."""

    kind: Kind
    path: str
    what: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "what": self.what, "reason": self.reason}


@dataclass
class ContractDiff:
    """Every change from one contract version to the next."""

    changes: list[Change]
    old_version: str
    new_version: str

    @property
    def breaking(self) -> bool:
        return any(c.kind == BREAKING for c in self.changes)

    def requires_major_bump(self) -> bool:
        """True when a breaking change ships without a major version bump (on 0.x, a minor bump is major)."""
        return self.breaking and not is_major_bump(self.old_version, self.new_version)

    def to_dict(self) -> dict[str, Any]:
        return {"old_version": self.old_version, "new_version": self.new_version, "breaking": self.breaking,
                "requires_major_bump": self.requires_major_bump(), "changes": [c.to_dict() for c in self.changes]}


@dataclass(frozen=True)
class Scheme:
    """The classification levels and sensitivities, least restrictive first (the mesh's, IM8/PDPA by default)."""

    levels: Sequence[str] = tuple(IM8_LEVELS)
    sensitivities: Sequence[str] = tuple(SENSITIVITIES)


_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-+].*)?$")


def semver(version: object) -> tuple[int, int, int] | None:
    found = _SEMVER.match(str(version).strip())
    if not found:
        return None
    major, minor, patch = found.groups()
    return int(major), int(minor or 0), int(patch or 0)


def is_major_bump(old: object, new: object) -> bool:
    """`1.4.0`→`2.0.0` is; `0.3.1`→`0.4.0` is too (semver: anything may change in 0.x). Unparsable: no."""
    a, b = semver(old), semver(new)
    if a is None or b is None:
        return False
    if a[0] == 0:
        return b[0] > 0 or b[1] > a[1]
    return b[0] > a[0]


def next_major(version: object) -> str | None:
    """The smallest version that counts as a major bump of `version` (`1.4.2`→`2.0.0`, `0.3.1`→`0.4.0`)."""
    parsed = semver(version)
    if parsed is None:
        return None
    major, minor, _ = parsed
    return f"0.{minor + 1}.0" if major == 0 else f"{major + 1}.0.0"


def diff_contracts(old: dict[str, Any], new: dict[str, Any], *, scheme: Scheme | None = None) -> ContractDiff:
    """Compare two ODCS documents (plain dicts as loaded from YAML): the old one is what consumers rely on."""
    ctx = _Context(scheme or Scheme())
    changes = [c for rule in CONTRACT_RULES for c in rule(ctx, old, new, "")]
    return ContractDiff(changes, str(old.get("version", "")), str(new.get("version", "")))


@dataclass(frozen=True)
class _Context:
    scheme: Scheme


Rule = Callable[[_Context, dict[str, Any], dict[str, Any], str], Iterable[Change]]


def _show(value: object) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _by_name(items: object) -> dict[str, dict[str, Any]]:
    return {str(i.get("name")): i for i in items or [] if isinstance(i, dict)} if isinstance(items, list) else {}


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# --- types ---------------------------------------------------------------------------------------------------------

_LOGICAL_HOLDS = {  # a logical type → the logical types whose every value it also holds
    "number": {"integer"},
    "timestamp": {"date"},
    "string": {"integer", "number", "boolean", "date", "timestamp", "time"},
}
_DEFAULT_PHYSICAL = {"integer": "BIGINT", "number": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN",
                     "date": "DATE", "timestamp": "TIMESTAMP", "time": "TIME"}


@dataclass(frozen=True)
class _Domain:
    """The values a physical type can hold: kind, size (bits, length or digits; 0 = unbounded) and scale."""

    kind: str
    size: int = 0
    scale: int = 0
    raw: str = ""


_INTS = {"TINYINT": 8, "INT1": 8, "SMALLINT": 16, "INT2": 16, "SHORT": 16, "INTEGER": 32, "INT": 32, "INT4": 32,
         "SIGNED": 32, "MEDIUMINT": 32, "BIGINT": 64, "INT8": 64, "LONG": 64, "HUGEINT": 128, "INT128": 128}
_UINTS = {"UTINYINT": 8, "USMALLINT": 16, "UINTEGER": 32, "UBIGINT": 64, "UHUGEINT": 128}
_FLOATS = {"FLOAT": 32, "FLOAT4": 32, "REAL": 32, "DOUBLE": 64, "FLOAT8": 64, "DOUBLE PRECISION": 64}
_STRINGS = {"VARCHAR", "CHAR", "BPCHAR", "TEXT", "STRING", "NVARCHAR", "NCHAR", "CHARACTER VARYING", "CHARACTER"}
_TIMESTAMPS = {"TIMESTAMP_S": 0, "TIMESTAMP_MS": 3, "TIMESTAMP": 6, "DATETIME": 6, "TIMESTAMP_US": 6,
               "TIMESTAMP_NS": 9}
_INT_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19, 128: 39}
_TYPE = re.compile(r"^([A-Z_][A-Z0-9_ ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?$")


def _domain(physical: str) -> _Domain:
    text = " ".join(physical.upper().split())
    found = _TYPE.match(text)
    if not found:
        return _Domain("other", raw=text)
    name, p, s = found.group(1), found.group(2), found.group(3)
    if name in _INTS:
        return _Domain("int", _INTS[name], raw=text)
    if name in _UINTS:
        return _Domain("uint", _UINTS[name], raw=text)
    if name in _FLOATS:
        return _Domain("float", _FLOATS[name], raw=text)
    if name in ("DECIMAL", "NUMERIC", "DEC"):
        precision, scale = (int(p), int(s or 0)) if p else (18, 3)  # DuckDB's DECIMAL is DECIMAL(18,3)
        return _Domain("decimal", precision, scale, raw=text)
    if name in _STRINGS:
        return _Domain("string", int(p or 0), raw=text)
    if name in _TIMESTAMPS:
        return _Domain("timestamp", int(p) if p else _TIMESTAMPS[name], raw=text)
    if name in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"):
        return _Domain("timestamptz", raw=text)
    if name in ("BOOLEAN", "BOOL", "LOGICAL"):
        return _Domain("boolean", raw=text)
    if name in ("DATE", "TIME"):
        return _Domain(name.lower(), raw=text)
    return _Domain("other", raw=text)


def _holds(a: _Domain, b: _Domain) -> bool:
    """Whether every value of physical type `b` is a value of physical type `a`."""
    if (a.kind, a.size, a.scale) == (b.kind, b.size, b.scale) and (a.kind != "other" or a.raw == b.raw):
        return True
    if a.kind == "string":
        if b.kind == "string":
            return a.size == 0 or (b.size != 0 and a.size >= b.size)
        return a.size == 0 and b.kind != "other"  # any scalar reads as text; nested and unknown types do not
    if a.kind == "int":
        return (b.kind == "int" and a.size >= b.size) or (b.kind == "uint" and a.size > b.size)
    if a.kind == "uint":
        return b.kind == "uint" and a.size >= b.size
    if a.kind == "decimal":
        whole = a.size - a.scale
        if b.kind in ("int", "uint"):
            return whole >= _INT_DIGITS[b.size]
        return b.kind == "decimal" and a.scale >= b.scale and whole >= b.size - b.scale
    if a.kind == "float":
        mantissa, digits = (24, 7) if a.size == 32 else (53, 15)
        if b.kind in ("int", "uint"):
            return b.size - (1 if b.kind == "int" else 0) <= mantissa
        return (b.kind == "float" and a.size >= b.size) or (b.kind == "decimal" and b.size <= digits)
    if a.kind == "timestamp":
        return b.kind == "date" or (b.kind == "timestamp" and a.size >= b.size)
    return False


def _type_change(old: str, new: str, holds: Callable[[str, str], bool]) -> str | None:
    """'wider', 'narrower', 'changed', or None when both hold the same values."""
    wider, narrower = holds(new, old), holds(old, new)
    if wider and narrower:
        return None
    return "wider" if wider else "narrower" if narrower else "changed"


def _logical_holds(a: str, b: str) -> bool:
    return a == b or b in _LOGICAL_HOLDS.get(a, set())


def _physical_holds(a: str, b: str) -> bool:
    return _holds(_domain(a), _domain(b))


def _type_change_of(what: str, path: str, old: str, new: str, verdict: str | None, note: str = "") -> Iterator[Change]:
    if verdict == "wider":
        yield Change(COMPATIBLE, path, f"{what} widened {old} → {new}{note}",
                     f"every {old} value is also a {new} value, so existing data and readers keep working")
    elif verdict == "narrower":
        yield Change(BREAKING, path, f"{what} narrowed {old} → {new}{note}",
                     f"not every {old} value fits in {new}: values consumers read today may be cut, rounded or rejected")
    elif verdict == "changed":
        yield Change(BREAKING, path, f"{what} changed {old} → {new}{note}",
                     f"{new} neither holds every {old} value nor reads like it: consumers' queries and casts break")


# --- column rules --------------------------------------------------------------------------------------------------


def logical_type(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = old.get("logicalType"), new.get("logicalType")
    if a == b:
        return
    verdict = "changed" if a is None or b is None else _type_change(str(a), str(b), _logical_holds)
    yield from _type_change_of("logicalType", _join(path, "logicalType"), str(a), str(b), verdict)


def physical_type(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = old.get("physicalType"), new.get("physicalType")
    if a == b:
        return
    note = ""
    if a is None or b is None:
        # An unpinned column is published as the query makes it; compare with the logical type's usual type.
        default = _DEFAULT_PHYSICAL.get(str(old.get("logicalType") if a is None else new.get("logicalType")))
        if default is None:
            return
        note = f" (no physicalType {'before' if a is None else 'now'}: {default} assumed for its logicalType)"
        a, b = (default, b) if a is None else (a, default)
    yield from _type_change_of("physicalType", _join(path, "physicalType"), str(a), str(b),
                               _type_change(str(a), str(b), _physical_holds), note)


_UPPER_BOUNDS = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
_LOWER_BOUNDS = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")


def type_options(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    """`logicalTypeOptions` bounds: a tighter bound or a new pattern narrows the type."""
    a, b = old.get("logicalTypeOptions") or {}, new.get("logicalTypeOptions") or {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        where = _join(path, f"logicalTypeOptions.{key}")
        what = f"logicalTypeOptions.{key} {_show(x) if x is not None else '(none)'} → {_show(y) if y is not None else '(none)'}"
        if y is None:
            yield Change(COMPATIBLE, where, what, "a bound removed: every value allowed before is still allowed")
            continue
        comparable = x is not None and type(x) is type(y) and isinstance(x, int | float | str)
        looser = comparable and ((key in _UPPER_BOUNDS and y > x) or (key in _LOWER_BOUNDS and y < x))
        if looser:
            yield Change(COMPATIBLE, where, what, "a looser bound: every value allowed before is still allowed")
        else:
            yield Change(BREAKING, where, what, "a tighter or new constraint: values consumers read today may be rejected")


def required(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = bool(old.get("required", False)), bool(new.get("required", False))
    if not a and b:
        yield Change(BREAKING, _join(path, "required"), "newly required (not null)",
                     "rows with no value here now fail the contract: producers and pipelines that leave it empty break")
    elif a and not b:
        yield Change(COMPATIBLE, _join(path, "required"), "no longer required",
                     "relaxed: nulls are now allowed; readers must tolerate them, nothing is removed")


def unique(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = bool(old.get("unique", False)), bool(new.get("unique", False))
    if not a and b:
        yield Change(BREAKING, _join(path, "unique"), "newly unique",
                     "data with repeated values now fails the contract")
    elif a and not b:
        yield Change(COMPATIBLE, _join(path, "unique"), "no longer unique", "relaxed: a constraint was dropped")


def _valid_values(quality: object) -> list[Any] | None:
    """The values a column's quality rules allow (`arguments.validValues`, or `validValues` on the rule)."""
    found: list[Any] | None = None
    for rule in quality if isinstance(quality, list) else []:
        if not isinstance(rule, dict):
            continue
        args = rule.get("arguments")
        values = args.get("validValues") if isinstance(args, dict) and "validValues" in args else rule.get("validValues")
        if isinstance(values, list):
            found = (found or []) + [v for v in values if _canon(v) not in {_canon(f) for f in found or []}]
    return found


def allowed_values(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = _valid_values(old.get("quality")), _valid_values(new.get("quality"))
    if a is None or b is None:
        return  # a whole rule added or removed is reported by quality_rules
    removed = [v for v in a if _canon(v) not in {_canon(x) for x in b}]
    added = [v for v in b if _canon(v) not in {_canon(x) for x in a}]
    where = _join(path, "quality.validValues")
    if removed:
        yield Change(BREAKING, where, f"allowed value(s) removed: {', '.join(map(_show, removed))}",
                     "rows holding them now fail the contract, and consumers that filter or map on them lose data")
    if added:
        yield Change(COMPATIBLE, where, f"allowed value(s) added: {', '.join(map(_show, added))}",
                     "new values may appear; every value allowed before is still allowed")


def _rule_label(rule: dict[str, Any]) -> str:
    for key in ("name", "id", "metric", "rule"):
        if rule.get(key):
            return str(rule[key])
    if rule.get("query"):
        return " ".join(str(rule["query"]).split())[:60]
    return str(rule.get("description") or rule.get("type") or "rule")[:60]


def _rule_key(rule: dict[str, Any]) -> str:
    return str(rule.get("id") or rule.get("name") or _canon(_without_values(rule)))


def _without_values(rule: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rule.items() if k != "validValues"}
    if isinstance(out.get("arguments"), dict):
        out["arguments"] = {k: v for k, v in out["arguments"].items() if k != "validValues"}
    return out


def quality_rules(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    """Quality rules added, removed or changed (their allowed values are compared by `allowed_values`)."""
    a = {_rule_key(r): r for r in old.get("quality") or [] if isinstance(r, dict)}
    b = {_rule_key(r): r for r in new.get("quality") or [] if isinstance(r, dict)}
    where = _join(path, "quality")
    for key in b.keys() - a.keys():
        yield Change(COMPATIBLE, f"{where}[{_rule_label(b[key])}]", f"new quality rule {_rule_label(b[key])}",
                     "a new promise about the data; nothing consumers read today is removed")
    for key in a.keys() - b.keys():
        yield Change(COMPATIBLE, f"{where}[{_rule_label(a[key])}]", f"quality rule {_rule_label(a[key])} removed",
                     "the check is no longer promised; the data itself is unchanged")
    for key in a.keys() & b.keys():
        if _canon(_without_values(a[key])) != _canon(_without_values(b[key])):
            yield Change(COMPATIBLE, f"{where}[{_rule_label(b[key])}]", f"quality rule {_rule_label(b[key])} changed",
                         "a check's threshold or schedule changed; the shape and visibility of the data are not")


def _rank(value: object, order: Sequence[str]) -> int | None:
    return order.index(value) if isinstance(value, str) and value in order else None


def classification(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = old.get("classification"), new.get("classification")
    if a == b:
        return
    levels = ctx.scheme.levels
    where = _join(path, "classification")
    what = f"classification {a or '(none)'} → {b or '(none)'}"
    ra = 0 if a is None else _rank(a, levels)  # unclassified reads as the lowest level
    rb = 0 if b is None else _rank(b, levels)
    if ra is None or rb is None:
        unknown = [str(v) for v, r in ((a, ra), (b, rb)) if r is None]
        yield Change(BREAKING, where, what, f"{', '.join(unknown)} is not a level of the classification scheme "
                     f"({' < '.join(levels)}), so it may hide the column from current consumers; review it")
    elif rb > ra:
        yield Change(BREAKING, where, what, "tightened: consumers cleared for the old level lose access to the "
                     "column (it is masked or withheld)")
    else:
        yield Change(COMPATIBLE, where, what, "loosened: everyone who could see the column still can")


def _cp(prop: dict[str, Any]) -> dict[str, Any]:
    return custom_properties(prop.get("customProperties")) if isinstance(prop.get("customProperties"), list) else {}


def sensitivity(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    order = ctx.scheme.sensitivities
    default = order[0] if order else "non-sensitive"
    a, b = _cp(old).get("sensitivity", default), _cp(new).get("sensitivity", default)
    if a == b:
        return
    where = _join(path, "customProperties[sensitivity]")
    ra, rb = _rank(a, order), _rank(b, order)
    if ra is None or rb is None:
        unknown = [str(v) for v, r in ((a, ra), (b, rb)) if r is None]
        yield Change(BREAKING, where, f"sensitivity {a} → {b}", f"{', '.join(unknown)} is not a sensitivity of the "
                     f"scheme ({' < '.join(order)}), so it may hide the column from current consumers; review it")
    elif rb > ra:
        yield Change(BREAKING, where, f"sensitivity {a} → {b}",
                     "raised: the column is masked or withheld from consumers who can read it today")
    else:
        yield Change(COMPATIBLE, where, f"sensitivity {a} → {b}", "loosened: everyone who could see it still can")


def pii(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = _cp(old).get("piiType"), _cp(new).get("piiType")
    if a == b:
        return
    where = _join(path, "customProperties[piiType]")
    if a is None:
        yield Change(BREAKING, where, f"newly marked as personal data ({b})",
                     "PII is masked or withheld from consumers without a grant for it: current readers lose the values")
    elif b is None:
        yield Change(COMPATIBLE, where, f"no longer marked as personal data (was {a})",
                     "loosened: everyone who could see the column still can")
    else:
        yield Change(BREAKING, where, f"personal-data type {a} → {b}",
                     "masking and grants follow the PII type: current consumers may lose access")


_DESCRIPTIVE = ("description", "businessName", "tags")


def descriptive(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    """Descriptions, business names and tags: documentation, never a break."""
    for key in _DESCRIPTIVE:
        a, b = old.get(key), new.get(key)
        if _canon(a) == _canon(b):
            continue
        where = _join(path, key)
        if key == "tags" and isinstance(a or [], list) and isinstance(b or [], list):
            added = [t for t in b or [] if t not in (a or [])]
            removed = [t for t in a or [] if t not in (b or [])]
            parts = ([f"added {', '.join(map(str, added))}"] if added else []) + \
                    ([f"removed {', '.join(map(str, removed))}"] if removed else [])
            what = f"tags {'; '.join(parts) or 'reordered'}"
        elif isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if _canon(a.get(k)) != _canon(b.get(k)))
            what = f"{key} changed ({', '.join(keys)})"
        else:
            what = f"{key} changed"
        yield Change(COMPATIBLE, where, what, "documentation only: the data and who can see it are unchanged")


_HANDLED_CPS = {"sensitivity", "piiType"}


def other_custom_properties(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = _cp(old), _cp(new)
    for key in sorted((set(a) | set(b)) - _HANDLED_CPS):
        if _canon(a.get(key)) != _canon(b.get(key)):
            yield Change(COMPATIBLE, _join(path, f"customProperties[{key}]"),
                         f"{key} {_show(a.get(key)) if key in a else '(none)'} → {_show(b.get(key)) if key in b else '(none)'}",
                         "metadata only: the data and who can see it are unchanged")


def nested(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    """The properties of an object column and the items of an array column, with the same rules."""
    if old.get("properties") or new.get("properties"):
        yield from _columns(ctx, old.get("properties"), new.get("properties"), path)
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        for rule in COLUMN_RULES:
            yield from rule(ctx, old["items"], new["items"], _join(path, "items"))


COLUMN_RULES: tuple[Rule, ...] = (
    logical_type, physical_type, type_options, required, unique, allowed_values, quality_rules,
    classification, sensitivity, pii, descriptive, other_custom_properties, nested,
)


def _columns(ctx: _Context, old: object, new: object, path: str) -> Iterator[Change]:
    a, b = _by_name(old), _by_name(new)
    for name, prop in a.items():
        where = f"{path}.properties[{name}]"
        if name not in b:
            yield Change(BREAKING, where, f"column {name} removed",
                         "queries and reports that read it fail; a rename is a removal plus an addition")
        else:
            for rule in COLUMN_RULES:
                yield from rule(ctx, prop, b[name], where)
    for name, prop in b.items():
        if name in a:
            continue
        where = f"{path}.properties[{name}]"
        if prop.get("required"):
            yield Change(BREAKING, where, f"required column {name} added",
                         "it must never be empty: every producer and pipeline writing the dataset must now fill it")
        else:
            yield Change(COMPATIBLE, where, f"optional column {name} added",
                         "existing queries keep working (SELECT * gains a column)")


# --- schema object rules -------------------------------------------------------------------------------------------


def columns(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    yield from _columns(ctx, old.get("properties"), new.get("properties"), path)


def _key_columns(obj: dict[str, Any]) -> list[str]:
    props = [p for p in obj.get("properties") or [] if isinstance(p, dict)]
    keyed = [(int(p.get("primaryKeyPosition", -1) or -1), i, str(p.get("name"))) for i, p in enumerate(props)
             if p.get("primaryKey")]
    return [name for _, _, name in sorted((pos if pos >= 0 else 10**6, i, n) for pos, i, n in keyed)]


def primary_key(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    a, b = _key_columns(old), _key_columns(new)
    if a == b:
        return
    added = [c for c in b if c not in a]
    removed = [c for c in a if c not in b]
    detail = ([f"added {', '.join(added)}"] if added else []) + ([f"removed {', '.join(removed)}"] if removed else [])
    what = f"primary key ({', '.join(a)}) → ({', '.join(b)})" + (f": {'; '.join(detail)}" if detail else ": reordered")
    yield Change(BREAKING, _join(path, "primaryKey"), what,
                 "joins, deduplication and incremental loads that rely on the key give different results")


def object_quality(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    yield from quality_rules(ctx, old, new, path)


def object_descriptive(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    yield from descriptive(ctx, old, new, path)


OBJECT_RULES: tuple[Rule, ...] = (columns, primary_key, object_quality, object_descriptive)


# --- contract rules ------------------------------------------------------------------------------------------------


def schema_objects(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    """Datasets (schema objects) matched by name; one removed and one added is a rename."""
    a, b = _by_name(old.get("schema")), _by_name(new.get("schema"))
    removed = [n for n in a if n not in b]
    added = [n for n in b if n not in a]
    if len(removed) == 1 and len(added) == 1:
        yield Change(BREAKING, f"schema[{removed[0]}]", f"dataset renamed {removed[0]} → {added[0]}",
                     "consumers address the dataset by its name: every query on the old name fails")
        removed, added = [], []
    for name in removed:
        yield Change(BREAKING, f"schema[{name}]", f"dataset {name} removed", "every query on it fails")
    for name in added:
        yield Change(COMPATIBLE, f"schema[{name}]", f"dataset {name} added", "nothing consumers read today changes")
    for name in a.keys() & b.keys():
        for rule in OBJECT_RULES:
            yield from rule(ctx, a[name], b[name], f"schema[{name}]")


def _sla_key(item: dict[str, Any]) -> str:
    element = item.get("element")
    return f"{item.get('property')}@{element}" if element else str(item.get("property"))


def _sla_value(item: dict[str, Any]) -> str:
    text = " ".join(str(item[k]) for k in ("value", "unit") if item.get(k) is not None)
    extra = [f"{k} {item[k]}" for k in ("valueExt", "driver", "element") if item.get(k) is not None]
    return text + (f" ({', '.join(extra)})" if extra else "")


def sla(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    """SLA properties (frequency, latency, retention, …), each named in the change."""
    def grouped(items: object) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                out.setdefault(_sla_key(item), []).append(item)
        return out

    a, b = grouped(old.get("slaProperties")), grouped(new.get("slaProperties"))
    reason = "a service level, not the data's shape or visibility; tell consumers who plan around it"
    for key in sorted(set(a) | set(b)):
        xs, ys = a.get(key, []), b.get(key, [])
        if _canon(xs) == _canon(ys):
            continue
        name = (xs or ys)[0].get("property")
        where = f"slaProperties[{key}]"
        if not xs:
            yield Change(COMPATIBLE, where, f"SLA {name} added: {'; '.join(map(_sla_value, ys))}", reason)
        elif not ys:
            yield Change(COMPATIBLE, where, f"SLA {name} removed (was {'; '.join(map(_sla_value, xs))})", reason)
        else:
            yield Change(COMPATIBLE, where, f"SLA {name} changed: {'; '.join(map(_sla_value, xs))} → "
                         f"{'; '.join(map(_sla_value, ys))}", reason)


def contract_id(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    if old.get("id") != new.get("id"):
        yield Change(BREAKING, "id", f"contract id {old.get('id')} → {new.get('id')}",
                     "consumers and input ports refer to the contract by its id")


def contract_descriptive(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    yield from descriptive(ctx, old, new, path)
    if old.get("status") != new.get("status"):
        yield Change(COMPATIBLE, "status", f"status {old.get('status')} → {new.get('status')}",
                     "a lifecycle note (e.g. deprecated); the data is unchanged")


_TOP_HANDLED = {"schema", "slaProperties", "id", "version", "apiVersion", "kind", "status", "contractCreatedTs",
                *_DESCRIPTIVE}


def other_sections(ctx: _Context, old: dict[str, Any], new: dict[str, Any], path: str) -> Iterator[Change]:
    """Team, support, roles, price, servers, custom properties, …: named, never breaking."""
    for key in sorted((set(old) | set(new)) - _TOP_HANDLED):
        if _canon(old.get(key)) != _canon(new.get(key)):
            state = "added" if key not in old else "removed" if key not in new else "changed"
            yield Change(COMPATIBLE, key, f"{key} {state}", "metadata about the contract, not the data's shape or visibility")


CONTRACT_RULES: tuple[Rule, ...] = (contract_id, schema_objects, sla, contract_descriptive, other_sections)

