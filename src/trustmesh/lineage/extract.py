"""Column lineage from a product's SQL: sqlglot qualifies the query, then each output column is traced
through CTEs, subqueries, joins and unions back to the input columns it reads, with how it reads them."""

from __future__ import annotations

from typing import Any, cast

from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from trustmesh.lineage.model import DIRECT, INDIRECT, ColumnLineage, ColumnRef, DatasetLineage, Transformation

# Functions whose result no longer reveals their input: hashing, keyed tokens, and trustmesh's masking.
MASKING_FUNCTIONS = frozenset({"md5", "sha1", "sha256", "sha512", "hash", "hmac", "mask", "mask_nric", "pseudonymise",
                               "pseudonymize", "tokenise", "tokenize", "redact", "tm_mask", "tm_token",
                               "person_token"})
RANK = {"IDENTITY": 0, "TRANSFORMATION": 1, "AGGREGATION": 2}
Edges = dict[ColumnRef, set[Transformation]]


def extract_lineage(address: str, tree: exp.Expr, schema: dict[str, dict[str, str]],
                    references: dict[str, str], expected: list[str] | None = None) -> DatasetLineage:
    """Lineage of one dataset. `schema`: engine view → {column: type}; `references`: view → input reference;
    `expected`: the columns the engine says the query returns (what lineage must account for, no less)."""
    result = DatasetLineage(address)
    try:
        qualified = qualify(tree.copy(), schema=cast(dict[str, object], schema), dialect="duckdb",
                            validate_qualify_columns=True,
                            identify=False)
        root = build_scope(qualified)
    except (OptimizeError, SqlglotError) as exc:
        result.unresolved.append(f"the query cannot be fully resolved: {exc}")
        return result
    if root is None:
        result.unresolved.append("the query has no SELECT to trace")
        return result
    unknown = sorted({t.name for s in root.traverse() for t in s.tables if t.name not in schema and t.name not in
                      {c.alias_or_name for c in s.ctes}})
    if unknown:
        result.unresolved.append(f"no schema is known for {', '.join(unknown)}, so its columns cannot be traced")
    tracer = _Tracer(references)
    for name in _output_names(root):
        if name == "*":
            result.unresolved.append("SELECT * over an input whose columns are unknown")
            continue
        column = ColumnLineage(name)
        for ref, transformations in tracer.resolve(root, name).items():
            for t in transformations:
                column.add(ref, t)
        if not column.inputs and not _constant(root, name):
            result.unresolved.append(f"column {name!r} could not be traced to an input")
        result.columns[name] = column
    if expected is not None and set(expected) != set(result.columns):
        missing = sorted(set(expected) - set(result.columns))
        result.unresolved.append(f"the lineage of column(s) {', '.join(missing)} could not be read from the SQL "
                                 "(a construct such as COLUMNS(...) that the analyser cannot expand)")
        for name in [c for c in result.columns if c not in expected]:
            del result.columns[name]
    return result


def _output_names(scope: Scope) -> list[str]:
    while scope.set_operation_scopes:
        scope = scope.set_operation_scopes[0]
    return [p.alias_or_name for p in scope.expression.expressions]


def _constant(scope: Scope, name: str) -> bool:
    while scope.set_operation_scopes:
        scope = scope.set_operation_scopes[0]
    projection = _projection(scope, name)
    return projection is not None and not list(projection.find_all(exp.Column))


def _projection(scope: Scope, name: str) -> exp.Expr | None:
    for p in scope.expression.expressions:
        if p.alias_or_name == name:
            return cast(exp.Expr, p.this if isinstance(p, exp.Alias) else p)
    return None


def _compose_direct(outer: Transformation, inner: Transformation) -> Transformation:
    if inner.type == INDIRECT:
        return inner
    subtype = max(outer.subtype, inner.subtype, key=lambda s: RANK.get(s, 0))
    return Transformation(DIRECT, subtype, outer.masking or inner.masking)


def _as_indirect(subtype: str, inner: Transformation) -> Transformation:
    return inner if inner.type == INDIRECT else Transformation(INDIRECT, subtype, inner.masking)


def _merge(into: Edges, more: Edges) -> None:
    for ref, ts in more.items():
        into.setdefault(ref, set()).update(ts)


class _Tracer:
    """Resolves a column of a scope to input columns, memoised per scope and column."""

    def __init__(self, references: dict[str, str]) -> None:
        self.references = references
        self.memo: dict[tuple[int, str], Edges] = {}

    def resolve(self, scope: Scope, name: str) -> Edges:
        key = (id(scope), name)
        if key not in self.memo:
            self.memo[key] = {}  # a guard against recursive CTEs
            self.memo[key] = self._resolve(scope, name)
        return self.memo[key]

    def _resolve(self, scope: Scope, name: str) -> Edges:
        edges = dict(self.projection_edges(scope, name))
        if not scope.set_operation_scopes:
            _merge(edges, self.scope_indirect(scope))
        return edges

    def projection_edges(self, scope: Scope, name: str) -> Edges:
        """What the projection `name` itself reads (its expression, CASE conditions, window specs)."""
        key = (id(scope), "\0projection\0" + name)
        if key not in self.memo:
            self.memo[key] = {}
            self.memo[key] = self._projection_edges(scope, name)
        return self.memo[key]

    def _projection_edges(self, scope: Scope, name: str) -> Edges:
        edges: Edges = {}
        if scope.set_operation_scopes:
            position = _output_names(scope).index(name) if name in _output_names(scope) else -1
            for branch in scope.set_operation_scopes:  # set operations match columns by position, not name
                names = _output_names(branch)
                if 0 <= position < len(names):
                    _merge(edges, self.resolve(branch, names[position]))
            return edges
        projection = _projection(scope, name)
        if projection is None:
            return edges
        identity = isinstance(projection, exp.Column)
        for column in projection.find_all(exp.Column):
            indirect = _indirect_role(column, projection)
            if indirect:
                _merge(edges, {ref: {_as_indirect(indirect, t) for t in ts}
                               for ref, ts in self.source(scope, column).items()})
                continue
            outer = Transformation(DIRECT, "IDENTITY" if identity else _direct_role(column, projection),
                                   _masked(column, projection))
            _merge(edges, {ref: {_compose_direct(outer, t) for t in ts} for ref, ts in self.source(scope, column).items()})
        return edges

    def source(self, scope: Scope, column: exp.Column) -> Edges:
        """The input columns behind a column of this scope."""
        source = scope.sources.get(column.table)
        if isinstance(source, exp.Table):
            ref = self.references.get(source.name, source.name)
            return {ColumnRef(ref, column.name): {Transformation(DIRECT, "IDENTITY")}}
        if isinstance(source, Scope):
            return self.resolve(source, column.name)
        return {}

    def scope_indirect(self, scope: Scope) -> Edges:
        key = (id(scope), "\0indirect")
        if key in self.memo:
            return self.memo[key]
        edges: Edges = {}
        self.memo[key] = edges
        select = scope.expression
        clauses: list[tuple[str, Any]] = [("JOIN", j.args.get("on")) for j in select.args.get("joins") or []]
        clauses += [("FILTER", select.args.get("where")), ("FILTER", select.args.get("having")),
                    ("FILTER", select.args.get("qualify")), ("GROUP_BY", select.args.get("group")),
                    ("SORT", select.args.get("order"))]
        for subtype, clause in clauses:
            if clause is None:
                continue
            for column in clause.find_all(exp.Column):
                if not column.table and _projection(scope, column.name) is not None:  # ORDER BY an output alias
                    found = self.projection_edges(scope, column.name)
                else:
                    found = self.source(scope, column)
                _merge(edges, {ref: {_as_indirect(subtype, t) for t in ts} for ref, ts in found.items()})
        return edges


def _ancestors(node: exp.Expr, root: exp.Expr) -> list[exp.Expr]:
    out = []
    parent = node.parent
    while parent is not None and parent is not root.parent:
        out.append(parent)
        if parent is root:
            break
        parent = parent.parent
    return out


def _indirect_role(column: exp.Column, root: exp.Expr) -> str | None:
    """WINDOW for a window's PARTITION BY / ORDER BY, CONDITIONAL for a CASE or IF condition; else None."""
    child: exp.Expr = column
    for parent in _ancestors(column, root):
        if isinstance(parent, exp.Window) and child is not parent.this:
            return "WINDOW"
        if isinstance(parent, exp.If) and child is parent.this:
            return "CONDITIONAL"
        if isinstance(parent, exp.Case) and child is parent.this:
            return "CONDITIONAL"
        if isinstance(parent, exp.Filter) and child is parent.expression:  # count(*) FILTER (WHERE ...)
            return "FILTER"
        child = parent
    return None


def _direct_role(column: exp.Column, root: exp.Expr) -> str:
    return "AGGREGATION" if any(isinstance(p, exp.AggFunc) for p in _ancestors(column, root)) else "TRANSFORMATION"


def _masked(column: exp.Column, root: exp.Expr) -> bool:
    for parent in _ancestors(column, root):
        if isinstance(parent, exp.Func):
            name = (parent.name if isinstance(parent, exp.Anonymous) else parent.sql_name()).lower()
            if name in MASKING_FUNCTIONS:
                return True
    return False
