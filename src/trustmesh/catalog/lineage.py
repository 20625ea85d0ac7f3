"""Lineage queries over the served versions: upstream, downstream, and who a change would hurt."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from trustmesh.errors import NotFound, UsageError
from trustmesh.metastore.schema import ColumnRow, DatasetRow, PersonRow, RoleRow

UNBOUNDED = 1000
_CURRENT = ("cur AS (SELECT e.dataset, e.\"column\" AS col, e.source_dataset, e.source_column, e.type, e.subtype, "
            "e.masking FROM tm_lineage_edges e JOIN tm_datasets d ON d.address = e.dataset "
            "AND d.current_version = e.version)")
_STEP = {
    "up": ("cur.dataset = walk.dataset AND cur.col = walk.col", "cur.source_dataset, cur.source_column"),
    "down": ("cur.source_dataset = walk.dataset AND cur.source_column = walk.col", "cur.dataset, cur.col"),
}


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
    """Every edge reachable from the dataset (or one column) going `up` or `down`, with its distance."""
    on, nxt = _STEP[direction]
    start = ("SELECT :dataset AS dataset, :column AS col, 0 AS depth" if column is not None else
             "SELECT dataset, name AS col, 0 AS depth FROM tm_columns WHERE dataset = :dataset")
    if column is None and direction == "up":
        start = "SELECT DISTINCT dataset, col, 0 AS depth FROM cur WHERE dataset = :dataset"
    sql = (f"WITH RECURSIVE {_CURRENT}, walk(dataset, col, depth) AS ({start} UNION "
           f"SELECT {nxt}, walk.depth + 1 FROM walk JOIN cur ON {on} WHERE walk.depth < :depth) "
           f"SELECT DISTINCT cur.dataset, cur.col, cur.source_dataset, cur.source_column, cur.type, cur.subtype, "
           f"cur.masking, walk.depth + 1 FROM walk JOIN cur ON {on} WHERE walk.depth < :depth")
    rows = session.execute(text(sql), {"dataset": dataset, "column": column, "depth": depth or UNBOUNDED}).all()
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[:7])
        if key not in best or r[7] < best[key]["depth"]:
            best[key] = {"dataset": r[0], "column": r[1], "source_dataset": r[2], "source_column": r[3],
                         "type": r[4], "subtype": r[5], "masking": bool(r[6]), "depth": int(r[7])}
    return sorted(best.values(), key=lambda e: (e["depth"], e["source_dataset"], e["source_column"], e["dataset"],
                                                e["column"], e["type"], e["subtype"]))


def impact(session: Session, dataset: str, column: str, change: str) -> dict[str, Any]:
    """Every downstream column a change to this column reaches, with the products, domains and people."""
    edges = walk(session, dataset, column, "down", None)
    affected: dict[str, dict[str, Any]] = {}
    for e in edges:
        entry = affected.setdefault(e["dataset"], {"dataset": e["dataset"], "columns": {}})
        how = "direct" if e["type"] == "DIRECT" else "indirect"
        entry["columns"].setdefault(e["column"], set()).add(f"{how} {e['subtype'].lower()}")
    datasets = []
    for address, entry in sorted(affected.items()):
        row = session.get(DatasetRow, address)
        domain = row.domain if row else address.split(".")[0]
        people = session.execute(select(RoleRow.role, PersonRow).join(PersonRow, PersonRow.id == RoleRow.person_id)
                                 .where(RoleRow.domain == domain)).all()
        datasets.append({
            "dataset": address, "product": row.product if row else None, "domain": domain,
            "columns": [{"column": c, "via": sorted(v), "effect": _effect(change, v)} for c, v in sorted(entry["columns"].items())],
            "owners": {role: sorted({p.name for r, p in people if r == role})
                       for role in ("data-owner", "data-domain-steward", "data-product-owner")},
            "consumers": [],  # grants arrive with access requests
        })
    return {"source": f"{dataset}.{column}", "change": change, "datasets": datasets,
            "products": sorted({d["product"] for d in datasets if d["product"]}),
            "domains": sorted({d["domain"] for d in datasets})}


def _effect(change: str, via: set[str]) -> str:
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
