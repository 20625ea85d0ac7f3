"""Compile a dataset's rules into one scan: every metric of every rule as an aggregate of a single SELECT."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

from trustmesh.errors import Problem
from trustmesh.quality.rules import QualityRule
from trustmesh.sqlguard import denied_functions, table_references

Quote = Callable[[str], str]
ROWS = "row_count"


def literal(value: Any) -> str:
    """A YAML value as a SQL literal: numbers as numbers, everything else as a quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def failure_predicate(rule: QualityRule, q: Quote) -> str | None:
    """The WHERE condition of the rows a column rule counts as bad (None: the rule counts no rows)."""
    col = q(rule.column) if rule.column else None
    args = rule.arguments
    if rule.metric == "nullValues" and col:
        return f"{col} IS NULL"
    if rule.metric == "missingValues" and col:
        missing = list(args.get("missingValues", [None, ""]))
        values = [v for v in missing if v is not None]
        parts = [f"{col} IS NULL"] if None in missing else []
        if values:
            parts.append(f"CAST({col} AS VARCHAR) IN ({', '.join(literal(str(v)) for v in values)})")
        return " OR ".join(parts) or "false"
    if rule.metric == "invalidValues" and col:
        if "validValues" in args:
            valid = [v for v in args["validValues"] if v is not None]
            return f"{col} IS NOT NULL AND {col} NOT IN ({', '.join(literal(v) for v in valid) or 'NULL'})"
        return f"{col} IS NOT NULL AND NOT regexp_full_match(CAST({col} AS VARCHAR), {literal(args['pattern'])})"
    return None


def metric_expression(rule: QualityRule, q: Quote) -> str | None:
    """The aggregate measuring a rule in rows; None for rules not computed in the scan."""
    if rule.metric == "rowCount":
        return "count(*)"
    if rule.metric == "duplicateValues":
        columns = list(rule.arguments.get("properties") or ([rule.column] if rule.column else []))
        if len(columns) == 1:
            return f"count({q(columns[0])}) - count(DISTINCT {q(columns[0])})"
        return f"count(*) - count(DISTINCT ({', '.join(q(c) for c in columns)}))"
    if rule.metric == "nullValues" and rule.column:
        return f"count(*) - count({q(rule.column)})"
    predicate = failure_predicate(rule, q)
    return f"count(*) FILTER (WHERE {predicate})" if predicate else None


@dataclass
class CompiledQuality:
    """The scan and the rules it answers; business SQL rules and type rules run apart from it."""

    scan_sql: str
    aliases: dict[str, str]  # rule id → output column of the scan
    columns: list[str] = field(default_factory=list)  # the scan's output columns, in order
    sql_rules: list[tuple[QualityRule, str]] = field(default_factory=list)
    type_rules: list[QualityRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def show(self) -> str:
        """Every statement, formatted, with the rules each output column answers."""
        metrics = len(set(self.aliases.values()) | {ROWS})
        out = [f"-- one scan: {metrics} metrics for {len(self.aliases)} rules", self.scan_sql + ";"]
        for rule, sql in self.sql_rules:
            out += [f"-- business rule {rule.id}", sql + ";"]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        """What runs, as data: the whole text, the scan and its columns, and what each rule is answered by."""
        return {"sql": self.show(), "scan_sql": self.scan_sql, "metrics": self.columns, "rules": self.aliases,
                "business_rules": [{"rule": rule.id, "sql": sql} for rule, sql in self.sql_rules],
                "type_rules": [rule.id for rule in self.type_rules], "problems": [p.to_dict() for p in self.problems]}


def compile_quality(rules: list[QualityRule], relation: str, q: Quote, *, dataset: str = "",
                    address: str = "") -> CompiledQuality:
    """One SELECT over `relation` computing the row count and every distinct metric the rules need."""
    expressions: dict[str, str] = {}  # expression → alias: the same metric is computed once
    aliases: dict[str, str] = {}
    compiled = CompiledQuality("", aliases)
    for rule in rules:
        if rule.metric == "sql":
            sql, problems = bind_sql_rule(rule, relation, q, dataset=dataset, address=address)
            compiled.problems += problems
            if sql:
                compiled.sql_rules.append((rule, sql))
            continue
        if rule.metric == "utcTimestamps":
            compiled.type_rules.append(rule)
            continue
        expression = metric_expression(rule, q)
        if expression is None:
            continue
        if expression == "count(*)":
            aliases[rule.id] = ROWS
            continue
        if expression not in expressions:
            expressions[expression] = f"m{len(expressions) + 1}"
        aliases[rule.id] = expressions[expression]
    select = [f"count(*) AS {ROWS}"] + [f"{e} AS {a}" for e, a in expressions.items()]
    compiled.columns = [ROWS, *expressions.values()]
    compiled.scan_sql = "SELECT\n  " + ",\n  ".join(select) + f"\nFROM {q(relation)}"
    return compiled


PLACEHOLDERS = ("${table}", "{table}", "${object}", "{object}")


def bind_sql_rule(rule: QualityRule, relation: str, q: Quote, *, dataset: str = "",
                  address: str = "") -> tuple[str | None, list[Problem]]:
    """A business rule's query, guarded: one read-only SELECT that reads this dataset and nothing else."""
    text = str(rule.query or "")
    for token in PLACEHOLDERS:
        text = text.replace(token, "__trustmesh_dataset__")
    if rule.column:
        text = text.replace("${column}", q(rule.column)).replace("{column}", q(rule.column))
    where = f"quality[{rule.name}]"

    def refuse(why: str) -> tuple[None, list[Problem]]:
        return None, [Problem(rule.source, f"quality rule {rule.name!r}: {why}", where,
                              fix="a `type: sql` rule is one SELECT over this dataset, written as ${table}")]

    try:
        statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        return refuse(f"the query does not parse ({str(exc).splitlines()[0]})")
    if len(statements) != 1 or not isinstance(statements[0], exp.Select | exp.SetOperation):
        return refuse("only a single SELECT is allowed")
    tree = statements[0]
    for node in tree.walk():
        if isinstance(node, exp.DDL | exp.DML | exp.Command | exp.Set | exp.Pragma | exp.Attach | exp.Copy
                      | exp.Placeholder | exp.Parameter):
            return refuse(f"it writes ({node.key.upper()}), which a quality rule may never do")
    denied = denied_functions(tree)
    if denied:
        return refuse(f"it calls {', '.join(d + '()' for d in denied)}, which reads the engine's state, its "
                      "settings or the outside world")
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            return refuse(f"it reads {table.sql('duckdb')!r}; a rule reads only its own dataset")
    own = {"__trustmesh_dataset__", dataset, address}
    for table in table_references(tree):
        name = ".".join(p for p in (table.catalog, table.db, table.name) if p)
        if name not in own:
            return refuse(f"it reads {name!r}; a rule reads only its own dataset (${{table}})")
        alias = table.alias or (table.name if name != "__trustmesh_dataset__" else "")
        replacement = exp.Table(this=exp.to_identifier(relation, quoted=True))
        if alias:
            replacement.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        table.replace(replacement)
    return tree.sql(dialect="duckdb"), []
