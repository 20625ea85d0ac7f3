"""Quality rules as data: read from an ODCS contract, a Trusted Centre's benchmarks, and the schema itself."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from trustmesh.descriptors import Contract, Mesh, OutputDataset
from trustmesh.descriptors.models import QualityBenchmark
from trustmesh.errors import Problem

METRICS = ("nullValues", "missingValues", "invalidValues", "duplicateValues", "rowCount")
COLUMN_METRICS = ("nullValues", "missingValues", "invalidValues", "duplicateValues")
OPERATORS = ("mustBe", "mustNotBe", "mustBeGreaterThan", "mustBeGreaterOrEqualTo", "mustBeLessThan",
             "mustBeLessOrEqualTo", "mustBeBetween", "mustNotBeBetween")
SEVERITIES = ("error", "warning", "info")
WEIGHTS = {"error": 3.0, "warning": 2.0, "info": 1.0}
UNITS = ("rows", "percent")


@dataclass(frozen=True)
class QualityRule:
    """One check: a metric (or a SQL rule) compared with a threshold, at a severity."""

    id: str
    name: str
    source: str  # "schema", "contract", or "benchmark:<trusted-centre domain>"
    metric: str  # one of METRICS, "sql", or "utcTimestamps"
    operator: str
    threshold: tuple[float, ...]
    severity: str = "error"
    unit: str = "rows"
    column: str | None = None
    dimension: str | None = None
    description: str = ""
    arguments: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    query: str | None = None

    @property
    def weight(self) -> float:
        return WEIGHTS.get(self.severity, 1.0)

    def passes(self, value: float | None) -> bool:
        """Whether a measured value meets the threshold (a missing value never passes)."""
        if value is None:
            return False
        t = self.threshold
        return {
            "mustBe": lambda: value == t[0],
            "mustNotBe": lambda: value != t[0],
            "mustBeGreaterThan": lambda: value > t[0],
            "mustBeGreaterOrEqualTo": lambda: value >= t[0],
            "mustBeLessThan": lambda: value < t[0],
            "mustBeLessOrEqualTo": lambda: value <= t[0],
            "mustBeBetween": lambda: t[0] <= value <= t[1],
            "mustNotBeBetween": lambda: not (t[0] <= value <= t[1]),
        }[self.operator]()

    def expectation(self) -> str:
        return expectation(self.operator, self.threshold, self.unit)


def expectation(operator: str, threshold: tuple[float, ...] | list[float], unit: str) -> str:
    """`≤ 5%`, `= 0`, `between 1 and 10`: a threshold as people read it."""
    words = {"mustBe": "=", "mustNotBe": "≠", "mustBeGreaterThan": ">", "mustBeGreaterOrEqualTo": "≥",
             "mustBeLessThan": "<", "mustBeLessOrEqualTo": "≤"}
    suffix = "%" if unit == "percent" else ""
    if operator in words:
        return f"{words[operator]} {_num(threshold[0])}{suffix}"
    lo, hi = (_num(v) for v in threshold)
    return f"{'between' if operator == 'mustBeBetween' else 'not between'} {lo} and {hi}{suffix}"


def _num(value: float) -> str:
    """A number as people write it: 3, not 3.0."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_rule(raw: dict[str, Any], *, source: str, file: str, where: str, column: str | None,
               index: int) -> tuple[QualityRule | None, list[Problem]]:
    """One ODCS `quality` entry (or a benchmark written the same way) as a rule, or the problems with it."""
    kind = raw.get("type", "library" if "metric" in raw or "rule" in raw else "text")
    if kind in ("text", "custom"):
        return None, []  # documentation, or a vendor's rule: nothing trustmesh runs
    metric = "sql" if kind == "sql" else str(raw.get("metric") or raw.get("rule") or "")
    name = str(raw.get("name") or raw.get("id") or f"{column + '-' if column else ''}{_slug(metric)}-{index + 1}")
    loc = f"{where}.quality[{name}]"
    problems = []
    if metric not in (*METRICS, "sql"):
        problems.append(Problem(file, f"unknown quality metric {metric!r}", loc,
                                fix=f"use one of {', '.join(METRICS)}, or `type: sql` with a query"))
    operators = [op for op in OPERATORS if op in raw]
    if len(operators) != 1:
        problems.append(Problem(file, f"a quality rule needs exactly one operator, found {operators or 'none'}", loc,
                                fix=f"use one of {', '.join(OPERATORS)}"))
        return None, problems
    operator = operators[0]
    value = raw[operator]
    values = value if isinstance(value, list) else [value]
    if operator in ("mustBeBetween", "mustNotBeBetween") and (not isinstance(value, list) or len(value) != 2):
        problems.append(Problem(file, f"{operator} needs two numbers, smallest first (got {value!r})", loc,
                                fix=f"write `{operator}: [low, high]`"))
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        problems.append(Problem(file, f"{operator} must be a number (got {value!r})", loc,
                                fix=f"write a number, e.g. `{operator}: 0`"))
    severity = str(raw.get("severity", "error"))
    if severity not in SEVERITIES:
        problems.append(Problem(file, f"severity {severity!r} is not known", loc, fix=f"use one of {', '.join(SEVERITIES)}"))
    unit = str(raw.get("unit", "rows"))
    if unit not in UNITS:
        problems.append(Problem(file, f"unit {unit!r} is not supported", loc, fix="use rows or percent"))
    if metric in COLUMN_METRICS and column is None and not (metric == "duplicateValues"
                                                           and (raw.get("arguments") or {}).get("properties")):
        problems.append(Problem(file, f"{metric} applies to a column", loc,
                                fix="put the rule under the column's `quality:`, or give `arguments: {properties: [...]}`"))
    if metric == "rowCount" and column is not None:
        problems.append(Problem(file, "rowCount applies to the dataset, not a column", loc,
                                fix="move the rule to the schema object's `quality:`"))
    if metric == "rowCount" and unit == "percent":
        problems.append(Problem(file, "rowCount is counted in rows", loc, fix="remove `unit: percent`"))
    arguments = dict(raw.get("arguments") or {})
    if metric == "invalidValues" and not ({"validValues", "pattern"} & set(arguments)):
        problems.append(Problem(file, "invalidValues needs `arguments.validValues` or `arguments.pattern`", loc,
                                fix="list the allowed values, or give a regular expression"))
    if "pattern" in arguments:
        try:
            re.compile(str(arguments["pattern"]))
        except re.error as exc:
            problems.append(Problem(file, f"pattern {arguments['pattern']!r} is not a regular expression: {exc}", loc,
                                    fix="correct the pattern"))
    if metric == "sql" and not raw.get("query"):
        problems.append(Problem(file, "a `type: sql` rule needs a `query`", loc,
                                fix="write a SELECT returning one number, e.g. SELECT count(*) FROM ${table} WHERE ..."))
    if problems:
        return None, problems
    return QualityRule(
        id=f"{source}/{column + '/' if column else ''}{name}", name=name, source=source, metric=metric,
        operator=operator, threshold=tuple(float(v) for v in values), severity=severity, unit=unit, column=column,
        dimension=raw.get("dimension"), description=str(raw.get("description", "")), arguments=arguments,
        query=raw.get("query"),
    ), []


def schema_rules(contract: Contract) -> list[QualityRule]:
    """The contract's schema as checks: required → no nulls; primary key and unique → no duplicates."""
    rules = []
    for col in contract.columns:
        if col.required or col.primary_key:
            rules.append(QualityRule(id=f"schema/{col.name}/required", name=f"{col.name} is required", source="schema",
                                     metric="nullValues", operator="mustBe", threshold=(0.0,), column=col.name,
                                     dimension="completeness"))
        if col.unique and not col.primary_key:
            rules.append(QualityRule(id=f"schema/{col.name}/unique", name=f"{col.name} is unique", source="schema",
                                     metric="duplicateValues", operator="mustBe", threshold=(0.0,), column=col.name,
                                     dimension="uniqueness"))
    key = contract.primary_key
    if key:
        rules.append(QualityRule(id="schema/primary-key", name=f"primary key ({', '.join(key)}) is unique",
                                 source="schema", metric="duplicateValues", operator="mustBe", threshold=(0.0,),
                                 column=key[0] if len(key) == 1 else None, dimension="uniqueness",
                                 arguments={"properties": key} if len(key) > 1 else {}))
    return rules


def benchmark_rules(mesh: Mesh, output: OutputDataset) -> tuple[list[QualityRule], list[Problem]]:
    """The sector's benchmarks from every Trusted Centre of the dataset's sector, applied to matching columns."""
    assert output.contract is not None
    domain = mesh.domains.get(output.domain)
    if domain is None:
        return [], []
    rules: list[QualityRule] = []
    problems: list[Problem] = []
    for centre in sorted(mesh.domains.values(), key=lambda d: d.name):
        if centre.kind != "trusted-centre" or centre.sector != domain.sector:
            continue
        for bench in centre.quality_benchmarks:
            source = f"benchmark:{centre.name}"
            file = f"domains/{centre.name}/domain.yaml"
            for column in _matching_columns(bench, output.contract):
                raw = bench.rule()
                if bench.metric == "utcTimestamps":
                    rules.append(QualityRule(id=f"{source}/{column}/{bench.name}", name=bench.name, source=source,
                                             metric="utcTimestamps", operator="mustBe", threshold=(0.0,),
                                             severity=bench.severity, column=column, dimension=bench.dimension,
                                             description=bench.description))
                    continue
                rule, issues = parse_rule({**raw, "name": bench.name}, source=source, file=file,
                                          where=f"qualityBenchmarks[{bench.name}]",
                                          column=None if bench.metric == "rowCount" else column, index=0)
                problems += issues
                if rule is not None:
                    rules.append(rule)
    return rules, problems


def _matching_columns(bench: QualityBenchmark, contract: Contract) -> list[str | None]:
    if bench.metric == "rowCount":
        return [None]
    selector = bench.applies_to
    out: list[str | None] = []
    for col in contract.columns:
        if selector.primary_key is not None and col.primary_key != selector.primary_key:
            continue
        if selector.logical_type is not None and col.logical_type != selector.logical_type:
            continue
        if selector.column is not None and not re.fullmatch(selector.column, col.name):
            continue
        if selector.pii is not None and bool(col.pii_type) != selector.pii:
            continue
        out.append(col.name)
    return out


def dataset_rules(mesh: Mesh, output: OutputDataset) -> tuple[list[QualityRule], list[Problem]]:
    """Every check a dataset must pass: its schema, its contract's rules, and its sector's benchmarks."""
    contract = output.contract
    assert contract is not None
    rules = schema_rules(contract)
    problems: list[Problem] = []
    obj = (contract.document.get("schema") or [{}])[0]
    where = f"schema[{output.name}]"
    for i, raw in enumerate(obj.get("quality") or []):
        rule, issues = parse_rule(raw, source="contract", file=contract.file, where=where, column=None, index=i)
        problems += issues
        rules += [rule] if rule else []
    for prop in obj.get("properties") or []:
        for i, raw in enumerate(prop.get("quality") or []):
            rule, issues = parse_rule(raw, source="contract", file=contract.file,
                                      where=f"{where}.properties[{prop.get('name')}]", column=prop.get("name"), index=i)
            problems += issues
            rules += [rule] if rule else []
    bench, issues = benchmark_rules(mesh, output)
    problems += issues
    rules += bench
    if not any(r.metric == "rowCount" and r.source == "contract" for r in rules):
        rules.append(QualityRule(id="schema/has-rows", name="the dataset has rows", source="schema", metric="rowCount",
                                 operator="mustBeGreaterThan", threshold=(0.0,), dimension="completeness",
                                 description="An empty dataset is never published unless its contract allows it "
                                             "with its own rowCount rule."))
    names = {c.name for c in contract.columns}
    for rule in rules:
        wanted = [rule.column] if rule.column else []
        wanted += list(rule.arguments.get("properties") or [])
        for column in wanted:
            if column not in names:
                problems.append(Problem(contract.file, f"quality rule {rule.name!r} checks column {column!r}, which the "
                                        "contract does not declare", where, fix="check the column's name"))
    seen: dict[str, QualityRule] = {}
    for rule in rules:
        if rule.id in seen:
            problems.append(Problem(contract.file, f"two quality rules are named {rule.name!r}", where,
                                    fix="give each rule of a column its own `name`"))
        seen[rule.id] = rule
    return rules, problems
