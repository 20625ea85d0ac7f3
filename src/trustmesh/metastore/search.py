"""Full-text search over the catalog in the database's own engine (SQLite FTS5, PostgreSQL tsvector), ranked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

FACETS = ("domain", "sector", "product_kind", "classification", "sensitivity", "has_pii")
_WORD = re.compile(r"[A-Za-z0-9]+")


@dataclass
class Hit:
    kind: str
    address: str
    dataset: str
    product: str
    domain: str
    sector: str
    product_kind: str
    classification: str | None
    sensitivity: str
    has_pii: bool
    title: str
    rank: float

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "title"}


def _words(query: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(query)][:12]


def search(session: Session, query: str, filters: dict[str, Any], limit: int = 50) -> list[Hit]:
    """Rank documents matching every word of `query` (prefixes count), then narrow by facet filters."""
    words = _words(query)
    where = []
    params: dict[str, Any] = {"limit": limit}
    for i, (key, value) in enumerate(sorted(filters.items())):
        if key not in FACETS or value is None:
            continue
        where.append(f"d.{key} = :f{i}")
        params[f"f{i}"] = value
    cols = "d.kind, d.address, d.dataset, d.product, d.domain, d.sector, d.product_kind, d.classification, " \
           "d.sensitivity, d.has_pii, d.title"
    dialect = session.get_bind().dialect.name
    if not words:
        sql = f"SELECT {cols}, 0.0 AS rank FROM tm_search_docs d WHERE d.kind = 'dataset'"
        sql += "".join(f" AND {w}" for w in where) + " ORDER BY d.address LIMIT :limit"
    elif dialect == "sqlite":
        params["q"] = " AND ".join(f'"{w}"*' for w in words)
        sql = (f"SELECT {cols}, bm25(tm_search_fts, 10.0, 1.0) AS rank FROM tm_search_fts "
               "JOIN tm_search_docs d ON d.id = tm_search_fts.rowid WHERE tm_search_fts MATCH :q"
               + "".join(f" AND {w}" for w in where) + " ORDER BY rank LIMIT :limit")
    else:
        params["q"] = " & ".join(f"{w}:*" for w in words)
        sql = (f"SELECT {cols}, -ts_rank_cd(d.tsv, q) AS rank FROM tm_search_docs d, to_tsquery('english', :q) q "
               "WHERE d.tsv @@ q" + "".join(f" AND {w}" for w in where) + " ORDER BY rank LIMIT :limit")
    rows = session.execute(text(sql), params).all()
    return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]), r[10], float(r[11])) for r in rows]
