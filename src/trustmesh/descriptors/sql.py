"""A product's SQL, parsed with sqlglot: which inputs it reads, and the same query bound to engine views."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from trustmesh.errors import Problem

DIALECT = "duckdb"
_TOKEN = re.compile(r"<Token token_type: [^,]+, text: (.*?), line: \d+.*?>")
READ_ONLY_ROOTS = (exp.Select, exp.SetOperation, exp.Values)


@dataclass
class ProductSql:
    """A parsed output-dataset query and the input names it references (ports or addresses)."""

    file: str
    tree: exp.Expression

    @property
    def references(self) -> list[str]:
        return sorted({name for name, _ in _table_refs(self.tree)})

    def bind(self, views: dict[str, str], dialect: str = DIALECT) -> str:
        """The query with every input reference replaced by the engine view that serves it."""
        tree = self.tree.copy()
        for name, table in _table_refs(tree):
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
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    refs = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue
        if not table.db and table.name in ctes:
            continue
        refs.append((reference_name(table), table))
    return refs


def parse_product_sql(text: str, file: str) -> tuple[ProductSql | None, list[Problem]]:
    """Parse one SELECT; a problem (with line) when it does not parse or is not a single read-only query."""
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
        if isinstance(inner, exp.DDL | exp.DML | exp.Command):
            problems.append(Problem(file, f"only a read-only query is allowed, found {inner.key.upper()}",
                                    fix="remove the statement; trustmesh writes the result itself"))
    if problems:
        return None, problems
    return ProductSql(file, tree), []
