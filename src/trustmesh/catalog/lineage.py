"""Lineage queries over the served versions: upstream, downstream, and who a change would hurt."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from trustmesh.errors import NotFound, UsageError
from trustmesh.metastore.schema import (
    AuditRow,
    ColumnRow,
    DatasetRow,
    GrantRow,
    LineageEdgeRow,
    PersonRow,
    RoleRow,
    utcnow,
)

UNBOUNDED = 1000
RECENT_DAYS = 30  # who queried a dataset "lately", for impact
_CHUNK = 256  # frontier columns per SQLite lookup: 512 bound parameters, far below its limit
_Edge = tuple[str, str, str, str, str, str, bool]
_ORDER = itemgetter("depth", "source_dataset", "source_column", "dataset", "column", "type", "subtype")
_CURRENT = (DatasetRow.address == LineageEdgeRow.dataset) & (DatasetRow.current_version == LineageEdgeRow.version)


def split_target(session: Session, target: str) -> tuple[str, str | None]:
    """`d.p.ds` → (dataset, None); `d.p.ds.column` → (dataset, column); unknown → NotFound with a hint."""
    parts = [p.strip('"') for p in target.strip().split(".")]
    if len(parts) not in (3, 4) or not all(parts):
        raise UsageError(f"{target!r} is not an address — fix: use <domain>.<product>.<dataset>[.<column>]")
    dataset = ".".join(parts[:3])
    if session.get(DatasetRow, dataset) is None and not dataset.startswith("source:"):
        raise NotFound(f"no dataset {dataset} in the catalog — fix: see `trustmesh catalog list`")
    column = parts[3] if len(parts) == 4 else None
    if column is not None and session.get(ColumnRow, (dataset, column)) is None:
        known = session.scalars(select(ColumnRow.name).where(ColumnRow.dataset == dataset)).all()
        raise NotFound(f"{dataset} has no column {column!r} — fix: one of {', '.join(known)}")
    return dataset, column


def walk(session: Session, dataset: str, column: str | None, direction: str, depth: int | None) -> list[dict[str, Any]]:
    """Every edge reachable from the dataset (or one column) going `up` or `down`, with its distance.

    Breadth-first, one level at a time: each level is one indexed lookup of the frontier's edges, and a column
    already reached is never expanded again, so a walk costs what it returns however many paths lead to a
    column. An edge's depth is one more than the distance of the column it was reached from (its smallest).
    """
    limit = depth or UNBOUNDED
    if session.autoflush:
        session.flush()  # as `session.execute` would: the lookups below go to the session's connection directly
    if column is not None:
        frontier = [(dataset, column)]
    elif direction == "up":
        frontier = [(dataset, c) for c in session.scalars(
            select(LineageEdgeRow.column).distinct().join(DatasetRow, _CURRENT).where(LineageEdgeRow.dataset == dataset))]
    else:
        frontier = [(dataset, c) for c in session.scalars(select(ColumnRow.name).where(ColumnRow.dataset == dataset))]
    seen = set(frontier)
    found: dict[_Edge, dict[str, Any]] = {}  # an edge is first reached at its smallest distance
    level = 0
    while frontier and level < limit:
        level += 1
        following: list[tuple[str, str]] = []
        for r in _step(session, direction, frontier):
            if r in found:
                continue
            found[r] = {"dataset": r[0], "column": r[1], "source_dataset": r[2], "source_column": r[3],
                        "type": r[4], "subtype": r[5], "masking": bool(r[6]), "depth": level}
            far = (r[2], r[3]) if direction == "up" else (r[0], r[1])
            if far not in seen:
                seen.add(far)
                following.append(far)
        frontier = following
    return sorted(found.values(), key=_ORDER)


def _step(session: Session, direction: str, nodes: list[tuple[str, str]]) -> list[_Edge]:
    """The served versions' edges into (`up`) or out of (`down`) these columns: an indexed lookup per column.

    Sent as the driver's own SQL: with hundreds of parameters, binding them by name costs more than the lookup.
    """
    conn = session.connection()
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    if conn.dialect.name == "postgresql":  # two array parameters: one short statement, prepared once
        return list(conn.exec_driver_sql(_lookup(direction, 0, mark), ([d for d, _ in nodes], [c for _, c in nodes])))
    rows: list[_Edge] = []
    for i in range(0, len(nodes), _CHUNK):
        chunk = nodes[i:i + _CHUNK]
        size = 1 << (len(chunk) - 1).bit_length()  # a few statement shapes, each prepared once
        padded = chunk + chunk[-1:] * (size - len(chunk))
        rows += conn.exec_driver_sql(_lookup(direction, size, mark), tuple(v for node in padded for v in node))
    return rows


@lru_cache(maxsize=32)
def _lookup(direction: str, size: int, mark: str) -> str:
    """`(near column) IN (...)`, the served version checked per edge: an exact index probe per frontier column.

    On SQLite the list is `SELECT ... FROM (VALUES ...)`: SQLite uses no index for a bare `IN (VALUES ...)` and,
    for a join to the list, may build a throwaway index over the whole table. `size` 0: PostgreSQL's `unnest`.
    """
    near = 'e.dataset, e."column"' if direction == "up" else "e.source_dataset, e.source_column"
    rows = (f"SELECT * FROM unnest(CAST({mark} AS text[]), CAST({mark} AS text[]))" if size == 0 else
            f"SELECT f.column1, f.column2 FROM (VALUES {', '.join([f'({mark}, {mark})'] * size)}) AS f")
    return ('SELECT e.dataset, e."column", e.source_dataset, e.source_column, e.type, e.subtype, e.masking '
            f"FROM tm_lineage_edges e WHERE ({near}) IN ({rows}) "
            "AND e.version = (SELECT d.current_version FROM tm_datasets d WHERE d.address = e.dataset)")


def impact(session: Session, dataset: str, column: str, change: str) -> dict[str, Any]:
    """The column itself and every downstream column a change to it reaches, with the products, domains, owners
    and consumers (active grants, and who queried each dataset in the last `RECENT_DAYS` days)."""
    edges = walk(session, dataset, column, "down", None)
    affected: dict[str, dict[str, Any]] = {dataset: {"dataset": dataset, "columns": {column: {"itself"}}}}
    for e in edges:
        entry = affected.setdefault(e["dataset"], {"dataset": e["dataset"], "columns": {}})
        how = "direct" if e["type"] == "DIRECT" else "indirect"
        entry["columns"].setdefault(e["column"], set()).add(f"{how} {e['subtype'].lower()}")
    # Two lookups for all affected datasets and their domains' people, not two per dataset.
    found: dict[str, tuple[str, str]] = {}
    addresses = sorted(affected)
    for i in range(0, len(addresses), _CHUNK):
        found.update({a: (p, d) for a, p, d in session.execute(
            select(DatasetRow.address, DatasetRow.product, DatasetRow.domain)
            .where(DatasetRow.address.in_(addresses[i:i + _CHUNK])))})
    domain_of = {a: found[a][1] if a in found else a.split(".")[0] for a in addresses}
    people: dict[str, set[tuple[str, str]]] = {}
    domains = sorted(set(domain_of.values()))
    for i in range(0, len(domains), _CHUNK):
        for d, role, name in session.execute(
                select(RoleRow.domain, RoleRow.role, PersonRow.name).join(PersonRow, PersonRow.id == RoleRow.person_id)
                .where(RoleRow.domain.in_(domains[i:i + _CHUNK]))):
            people.setdefault(str(d), set()).add((role, name))
    grants, queried = consumers(session, addresses)
    datasets = []
    for address, entry in sorted(affected.items()):
        domain = domain_of[address]
        roles = people.get(domain, set())
        datasets.append({
            "dataset": address, "product": found[address][0] if address in found else None, "domain": domain,
            "columns": [{"column": c, "via": sorted(v), "effect": _effect(change, v)} for c, v in sorted(entry["columns"].items())],
            "owners": {role: sorted({n for r, n in roles if r == role})
                       for role in ("data-owner", "data-domain-steward", "data-product-owner")},
            "consumers": grants.get(address, []),
            "queried_by": queried.get(address, []),
        })
    return {"source": f"{dataset}.{column}", "change": change, "datasets": datasets,
            "products": sorted({d["product"] for d in datasets if d["product"]}),
            "domains": sorted({d["domain"] for d in datasets})}


def consumers(session: Session, addresses: list[str], *, days: int = RECENT_DAYS
              ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Who uses each dataset: the principals holding an active grant on it (grant, columns, expiry), and the
    people whose governed queries read it in the last `days` days (how many, and the last one), from the audit."""
    now = utcnow()
    grants: dict[str, list[dict[str, Any]]] = {}
    for i in range(0, len(addresses), _CHUNK):
        for g in session.scalars(select(GrantRow).where(GrantRow.dataset.in_(addresses[i:i + _CHUNK]),
                                                        GrantRow.state == "active", GrantRow.expires_at > now)
                                 .order_by(GrantRow.principal, GrantRow.id)):
            grants.setdefault(g.dataset, []).append({
                "principal": g.principal, "kind": g.principal_kind, "grant": f"grant-{g.id}",
                "columns": g.columns, "expires_at": g.expires_at.isoformat()})
    wanted = set(addresses)
    runs: dict[str, dict[str, list[datetime]]] = {}
    since = now - timedelta(days=days)
    for i in range(0, len(addresses), _CHUNK // 8):  # a query's subject lists the datasets it read
        chunk = addresses[i:i + _CHUNK // 8]
        rows = session.execute(select(AuditRow.actor, AuditRow.at, AuditRow.details)
                               .where(AuditRow.type == "query.run", AuditRow.at >= since,
                                      or_(*(AuditRow.subject.contains(a, autoescape=True) for a in chunk))))
        for actor, at, details in rows:
            for address in set(details.get("datasets", {})) & wanted & set(chunk):
                runs.setdefault(address, {}).setdefault(actor, []).append(at)
    queried = {address: [{"principal": actor, "queries": len(ats), "last_at": max(ats).isoformat()}
                         for actor, ats in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
               for address, by in runs.items()}
    return grants, queried


def _effect(change: str, via: set[str]) -> str:
    if via == {"itself"}:
        return {"drop": "breaks every consumer's query that names it, and their grants' column lists",
                "rename": "breaks every consumer's query that names it, and their grants' column lists",
                "retype": "consumers read other values or a different type"}[change]
    direct = any(v.startswith("direct") for v in via)
    if change in ("drop", "rename"):
        return "breaks: its SQL reads a column that would no longer exist"
    if change == "retype":
        return "its type or values may change" if direct else "its rows or grouping may change"
    return "reads it directly" if direct else "depends on it indirectly"


def render(edges: list[dict[str, Any]], fmt: str) -> str:
    """Edges as text, Graphviz DOT or Mermaid."""
    def node(d: str, c: str) -> str:
        return f"{d}.{c}"

    if fmt == "dot":
        lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
        for e in edges:
            style = "solid" if e["type"] == "DIRECT" else "dashed"
            lines.append(f'  "{node(e["source_dataset"], e["source_column"])}" -> "{node(e["dataset"], e["column"])}" '
                         f'[label="{e["subtype"].lower()}", style={style}];')
        return "\n".join([*lines, "}"])
    if fmt == "mermaid":
        ids: dict[str, str] = {}

        def mid(name: str) -> str:
            if name not in ids:
                ids[name] = f"n{len(ids)}"
            return ids[name]

        lines = ["graph LR"]
        for e in edges:
            src, dst = node(e["source_dataset"], e["source_column"]), node(e["dataset"], e["column"])
            arrow = "-->" if e["type"] == "DIRECT" else "-.->"
            lines.append(f'  {mid(src)}["{src}"] {arrow}|{e["subtype"].lower()}| {mid(dst)}["{dst}"]')
        return "\n".join(lines)
    return "\n".join(f"{'  ' * (e['depth'] - 1)}{node(e['source_dataset'], e['source_column'])} "
                     f"{'==' if e['type'] == 'DIRECT' else '--'}{e['subtype'].lower()}{'/masked' if e['masking'] else ''}"
                     f"==> {node(e['dataset'], e['column'])}" for e in edges)
