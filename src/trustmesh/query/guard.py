"""The query guard: only one read query, only datasets by address, only allow-listed functions.

Two parsers must agree. sqlglot parses the consumer's SQL, finds every dataset it names and rewrites
each into a policy-enforced relation; then DuckDB's own parser (`json_serialize_sql`, in
`trustmesh.sqlguard`, which also guards builds) reads the rewritten text that will actually run and
checks it again: a single SELECT, reading nothing but those relations and the query's own CTEs, calling
nothing outside the allow-list. Whatever one parser misreads, the other refuses.
"""

from __future__ import annotations

import logging
import re
from itertools import pairwise
from typing import Any

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.errors import ParseError
from sqlglot.tokens import Tokenizer

from trustmesh.sqlguard import (
    INTERNAL_PREFIX,
    PERSON_COLUMN,
    DatasetRef,
    Parsed,
    QueryRefused,
    ctes_in_scope,
    restrict_to_aggregates,
    verify,
)

__all__ = ["INTERNAL_PREFIX", "PERSON_COLUMN", "DatasetRef", "Parsed", "QueryRefused", "parse", "quote_addresses",
           "restrict_to_aggregates", "rewrite", "verify"]

MAX_SQL_CHARS = 100_000

READ_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Subquery)
FORBIDDEN_NODES = (exp.Into, exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Command, exp.Copy,
                   exp.Set, exp.Pragma, exp.Attach, exp.Detach, exp.Install, exp.Use, exp.Describe, exp.Show,
                   exp.Summarize, exp.Placeholder, exp.Parameter)

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_UNQUOTED_HYPHEN = re.compile(r"(?<![\"\w])[A-Za-z_]\w*-[\w-]*\.")

logging.getLogger("sqlglot").setLevel(logging.ERROR)


def quote_addresses(sql: str, products: set[str]) -> str:
    """`econ-tc.market-jobs-dp.jobs` → `"econ-tc"."market-jobs-dp".jobs` where `econ-tc.market-jobs-dp` is a
    known product: hyphenated domain and product names may be written unquoted, as addresses are everywhere else.

    Only adjacent tokens (no spaces around the dashes or the dot) outside strings and comments are joined, so
    `a.x - b.y` stays a subtraction.
    """
    try:
        tokens = Tokenizer(dialect="duckdb").tokenize(sql)
    except Exception:
        return sql
    edits: list[tuple[int, int, str]] = []
    i = 0
    while i < len(tokens):
        domain, j = _hyphenated(tokens, i)
        if domain and j + 2 < len(tokens) and tokens[j + 1].token_type == TokenType.DOT \
                and _adjacent(tokens[j], tokens[j + 1], tokens[j + 2]):
            product, k = _hyphenated(tokens, j + 2)
            if product and (len(domain) > 1 or len(product) > 1) \
                    and f"{_joined(domain)}.{_joined(product)}" in products:
                edits += [(run[0].start, run[-1].end, f'"{_joined(run)}"') for run in (domain, product) if len(run) > 1]
                i = k + 1
                continue
        i += 1
    for start, end, text in reversed(edits):
        sql = sql[:start] + text + sql[end + 1:]
    return sql


def _hyphenated(tokens: list[Any], i: int) -> tuple[list[Any], int]:
    """The words joined by dashes with no space between them from token i (`econ`, `-`, `tc`), and the index of
    the last; no words when token i is not one."""
    if tokens[i].token_type == TokenType.IDENTIFIER:  # already quoted: "econ-tc"
        return [tokens[i]], i
    if not _WORD.fullmatch(tokens[i].text) or tokens[i].token_type == TokenType.STRING:
        return [], i
    run, j = [tokens[i]], i
    while (j + 2 < len(tokens) and tokens[j + 1].token_type == TokenType.DASH
           and _adjacent(tokens[j], tokens[j + 1], tokens[j + 2]) and _WORD.fullmatch(tokens[j + 2].text)
           and tokens[j + 2].token_type != TokenType.STRING):
        run.append(tokens[j + 2])
        j += 2
    return run, j


def _adjacent(*tokens: Any) -> bool:
    return all(b.start == a.end + 1 for a, b in pairwise(tokens))


def _joined(run: list[Any]) -> str:
    return "-".join(t.text for t in run)


def parse(sql: str, products: set[str]) -> Parsed:
    """Parse a consumer's query and find the datasets it reads; refuse anything but one read query."""
    if not sql or not sql.strip():
        raise QueryRefused("the query is empty — fix: write a SELECT naming datasets as domain.\"product\".dataset")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRefused(f"the query is {len(sql):,} characters; at most {MAX_SQL_CHARS:,} are accepted")
    sql = quote_addresses(sql, products)
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except (ParseError, Exception) as exc:
        hint = ""
        if _UNQUOTED_HYPHEN.search(sql):
            hint = (' — fix: check the dataset address (`trustmesh catalog list`); a name with a dash that is not a '
                    'known product must be quoted, e.g. "econ-tc"."market-jobs-dp".monthly_market_jobs')
        raise QueryRefused(f"the query does not parse: {str(exc).splitlines()[0][:300]}{hint}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"one statement per query, not {len(statements)} — fix: send them one at a time")
    tree = statements[0]
    if not isinstance(tree, READ_ROOTS):
        raise QueryRefused(f"only read queries (SELECT, WITH, UNION/INTERSECT/EXCEPT, VALUES) are allowed; this is "
                           f"{type(tree).__name__.upper()}")
    bad = next((n for n in tree.walk() if isinstance(n, FORBIDDEN_NODES)), None)
    if bad is not None:
        raise QueryRefused(f"{type(bad).__name__.upper()} is not allowed in a query: only reads are")
    for ident in tree.find_all(exp.Identifier):
        if ident.name.lower().startswith(INTERNAL_PREFIX):
            raise QueryRefused(f"names starting with {INTERNAL_PREFIX} are reserved: {ident.name!r}")
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    refs: list[DatasetRef] = []
    for table in list(tree.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            continue  # a table function: DuckDB's check below names it
        if table.catalog and table.db:
            refs.append(DatasetRef(f"{table.catalog}.{table.db}.{table.name}", _version(table), table))
        elif table.db or table.catalog:
            raise QueryRefused(f"{table.sql('duckdb')} is not a dataset address — fix: name datasets as "
                               "domain.\"product\".dataset, e.g. bts.\"flights-dp\".flights")
        elif table.name.lower() not in ctes_in_scope(table):
            raise QueryRefused(f"unknown table {table.name!r} — fix: name datasets as domain.\"product\".dataset "
                               "(see `trustmesh catalog list`); a CTE is visible only inside the query that "
                               "defines it")
    return Parsed(tree, refs, ctes)


def _version(table: exp.Table) -> int | None:
    when = table.args.get("when")
    if when is None:
        return None
    kind = str(when.args.get("kind") or "").upper()
    value = when.args.get("expression")
    if kind != "VERSION" or not isinstance(value, exp.Literal) or value.is_string or not value.this.isdigit():
        raise QueryRefused(f"{table.sql('duckdb')}: a past version is `AT (VERSION => N)` with N a version "
                           "number (see `trustmesh catalog versions ADDRESS`)")
    table.set("when", None)
    return int(value.this)


def rewrite(parsed: Parsed, views: dict[int, str]) -> str:
    """The query with each dataset reference replaced by its policy-enforced relation (keyed by id(node))."""
    for ref in parsed.refs:
        node = ref.node
        alias = node.args.get("alias")
        replacement = exp.Table(this=exp.to_identifier(views[id(node)], quoted=True))
        replacement.set("alias", alias.copy() if alias else exp.TableAlias(this=exp.to_identifier(node.name, quoted=True)))
        node.replace(replacement)
    return parsed.tree.sql(dialect="duckdb")


