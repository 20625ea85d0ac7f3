"""A product's SQL, parsed with sqlglot: which inputs it reads, and the same query bound to engine views."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from trustmesh.errors import Problem
from trustmesh.sqlguard import (
    INTERNAL_PREFIX,
    DatasetRef,
    Parsed,
    denied_functions,
    restrict_to_aggregates,
    table_references,
)

DIALECT = "duckdb"
_TOKEN = re.compile(r"<Token token_type: [^,]+, text: (.*?), line: \d+.*?>")
READ_ONLY_ROOTS = (exp.Select, exp.SetOperation, exp.Values)


@dataclass
class ProductSql:
    """A parsed output-dataset query and the input names it references (ports or addresses)."""

    file: str
    tree: exp.Expression
    _bound: dict[tuple[Any, ...], str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def references(self) -> list[str]:
        return sorted({name for name, _ in _table_refs(self.tree)})

    def bind(self, views: dict[str, str], dialect: str = DIALECT,
             aggregate_only: dict[str, tuple[int, str | None]] | None = None) -> str:
        """The query with every input reference replaced by the engine view that serves it.

        `aggregate_only`: inputs this product may read only as aggregates, (k, person column) each: the query
        must have the shape a consumer's would (QueryRefused otherwise), and groups of fewer than k people
        are dropped, exactly as the gateway does.
        """
        key = (tuple(sorted(views.items())), dialect, tuple(sorted((aggregate_only or {}).items())))
        if key not in self._bound:  # validation and the build bind the same query to the same views
            self._bound[key] = self._bind(views, dialect, aggregate_only or {})
        return self._bound[key]

    def _bind(self, views: dict[str, str], dialect: str, aggregate_only: dict[str, tuple[int, str | None]]) -> str:
        tree = self.tree.copy()
        refs = _table_refs(tree)
        for name, table in refs:
            if name in aggregate_only:
                parsed = Parsed(tree, [DatasetRef(n, None, t) for n, t in refs], set())
                restrict_to_aggregates(parsed, DatasetRef(name, None, table), *aggregate_only[name])
        for name, table in refs:
            view = views[name]
            alias = table.alias or (table.name if name != table.name or table.db else "")
            replacement = exp.Table(this=exp.to_identifier(view, quoted=True))
            if alias:
                replacement.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
            table.replace(replacement)
        return tree.sql(dialect=dialect)


def reference_name(table: exp.Table) -> str:
    """`faa."airports-dp".airports` → `faa.airports-dp.airports`; `raw_flights` → `raw_flights`."""
    parts = [p for p in (table.catalog, table.db, table.name) if p]
    return ".".join(parts)


def _table_refs(tree: exp.Expression) -> list[tuple[str, exp.Table]]:
    """Every input the query reads: each table name that is not a CTE in scope where it is read."""
    return [(reference_name(table), table) for table in table_references(tree)]


def parse_product_sql(text: str, file: str) -> tuple[ProductSql | None, list[Problem]]:
    """Parse one SELECT; a problem (with line) when it does not parse or is not a single read-only query.

    Validation and the build parse the same text, and so does every later build of an unchanged query: the
    answer depends on the text alone and is remembered (`ProductSql.bind` works on a copy of the tree, so
    sharing it is safe); the file it is read from only names where problems are.
    """
    sql, problems = _parsed(text)
    if sql is not None and sql.file != file:
        sql = ProductSql(file, sql.tree, sql._bound)
    return sql, [dataclasses.replace(p, file=file) for p in problems]


@lru_cache(maxsize=2048)
def _parsed(text: str) -> tuple[ProductSql | None, tuple[Problem, ...]]:
    sql, problems = _parse(text, "")
    return sql, tuple(problems)


def _parse(text: str, file: str) -> tuple[ProductSql | None, list[Problem]]:
    try:
        statements = [s for s in sqlglot.parse(text, read=DIALECT) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line = first.get("line")
        detail = _TOKEN.sub(lambda m: repr(m.group(1)), first.get("description") or str(exc).splitlines()[0])
        near = first.get("highlight")
        message = f"SQL does not parse: {detail}" + (f" near {near!r}" if near else "")
        col = first.get("col")
        path = f"line {line}, column {col}" if line else ""
        return None, [Problem(file, message, path, line, "correct the SQL (DuckDB dialect)")]
    except TokenError as exc:
        return None, [Problem(file, f"SQL does not parse: {exc}", fix="correct the SQL (DuckDB dialect)")]
    if len(statements) != 1:
        return None, [Problem(file, f"expected one SQL statement, found {len(statements)}",
                              fix="keep exactly one SELECT per file; one dataset per file")]
    tree = statements[0]
    if not isinstance(tree, READ_ONLY_ROOTS):
        return None, [Problem(file, f"only a read-only query is allowed, found {tree.key.upper()}",
                              fix="write a SELECT (optionally WITH ... SELECT); trustmesh publishes its result")]
    problems = []
    for node in tree.find_all(exp.Table):
        if not isinstance(node.this, exp.Identifier):
            problems.append(Problem(file, f"the query reads {node.sql(DIALECT)!r} directly",
                                    fix="declare the file or table as an input port and read it by the port's name"))
    for inner in tree.walk():
        if isinstance(inner, exp.DDL | exp.DML | exp.Command | exp.Set | exp.Pragma | exp.Attach | exp.Detach
                      | exp.Install | exp.Use | exp.Copy | exp.Placeholder | exp.Parameter):
            problems.append(Problem(file, f"only a read-only query is allowed, found {inner.key.upper()}",
                                    fix="remove it; trustmesh binds the inputs and writes the result itself"))
    for name in denied_functions(tree):
        problems.append(Problem(file, f"the query calls {name}(), which product SQL may not call: it reads the "
                                "engine's state, its settings or the outside world",
                                fix="compute the value from the product's inputs; declare what it reads as an input port"))
    for ident in tree.find_all(exp.Identifier):
        if ident.name.lower().startswith((INTERNAL_PREFIX, "in__", "cand__", "qc__")):
            problems.append(Problem(file, f"the name {ident.name!r} is reserved for the platform's own relations",
                                    fix="rename it (names starting with __tm, in__, cand__ or qc__ are reserved)"))
            break
    if problems:
        return None, problems
    return ProductSql(file, tree), []
