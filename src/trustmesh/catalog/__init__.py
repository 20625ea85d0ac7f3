"""The catalog, read side: list, show, versions, search with facets, and reading any published version."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustmesh.access.model import Principal
from trustmesh.descriptors.addresses import normalise_address, normalise_product_address
from trustmesh.errors import NotFound, UsageError
from trustmesh.metastore import Metastore
from trustmesh.metastore.iceberg import snapshot_files
from trustmesh.metastore.schema import (
    ColumnRow,
    DatasetRow,
    DomainRow,
    FindingRow,
    PersonRow,
    ProductRow,
    ProductStatusRow,
    QualityResultRow,
    QuarantineRow,
    RoleRow,
    VersionRow,
    utcnow,
)
from trustmesh.metastore.search import FACETS, search
from trustmesh.metastore.storage import Warehouse
from trustmesh.privacy.masking import choose, declared_masking
from trustmesh.quality.freshness import freshness
from trustmesh.quality.rules import expectation

ROLE_ORDER = ["data-owner", "data-domain-steward", "data-product-owner", "developer"]
# score bands, best first: (lowest score of the band, its name)
QUALITY_BANDS = [(95.0, "good"), (80.0, "fair")]
# facets over the served version's standing, filtered after the text search: facet → the values it can take
STANDING_FACETS = {"quality": ["good", "fair", "poor", "none"], "freshness": ["fresh", "stale"],
                   "governance": ["compliant", "at-risk", "unfit for consumption", "not evaluated"]}


def quality_band(score: float | None) -> str:
    """good (≥ 95), fair (≥ 80) or poor; `none` when nothing was measured."""
    if score is None:
        return "none"
    return next((band for floor, band in QUALITY_BANDS if score >= floor), "poor")


def standing_facets(standing: dict[str, Any]) -> dict[str, str]:
    """A dataset's value in each standing facet, from `Catalog._standing`."""
    return {"quality": quality_band(standing.get("quality_score")),
            "freshness": "stale" if standing.get("stale") else "fresh",
            "governance": standing.get("governance_status") or "not evaluated"}


class Catalog:
    """Everything a consumer can find out about published products, from the metastore."""

    def __init__(self, store: Metastore, iceberg: Callable[[], Any], warehouse: Warehouse | None = None) -> None:
        self.store = store
        self.iceberg = iceberg
        self.warehouse = warehouse
        self._snapshot_files: dict[tuple[str, int], list[str]] = {}

    def domains(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.scalars(select(DomainRow).order_by(DomainRow.name)).all()
            counts = Counter(s.scalars(select(ProductRow.domain)).all())
            return [{"name": d.name, "kind": d.kind, "sector": d.sector, "description": d.description,
                     "products": counts.get(d.name, 0)} for d in rows]

    def datasets(self, domain: str | None = None) -> list[dict[str, Any]]:
        with self.store.session() as s:
            query = select(DatasetRow, ProductRow).join(ProductRow, ProductRow.address == DatasetRow.product)
            if domain:
                query = query.where(DatasetRow.domain == domain)
            out = []
            now = utcnow()
            for ds, product in s.execute(query.order_by(DatasetRow.address)).all():
                latest = self._version_row(s, ds.address, ds.current_version)
                out.append({**_dataset_summary(ds, product), "rows": latest.row_count if latest else None,
                            "published_at": latest.published_at.isoformat() if latest else None,
                            "quality_score": latest.quality_score if latest else None,
                            "stale": _fresh(ds, latest, now)["stale"]})
            return out

    def owners(self, domain: str) -> dict[str, list[dict[str, Any]]]:
        with self.store.session() as s:
            rows = s.execute(select(RoleRow.role, PersonRow).join(PersonRow, PersonRow.id == RoleRow.person_id)
                             .where(RoleRow.domain == domain)).all()
        by_role: dict[str, list[dict[str, Any]]] = {r: [] for r in ROLE_ORDER}
        for role, person in rows:
            by_role.setdefault(role, []).append({"id": person.id, "name": person.name, "email": person.email})
        return by_role

    def show(self, address: str, *, owners: dict[str, list[dict[str, Any]]] | None = None,
             reader: Principal | None = None) -> dict[str, Any]:
        """A dataset as the catalog knows it; `owners` spares the lookup when the caller has them already.

        With a `reader` (a server's caller), its quality checks keep their failing-row samples only when the reader
        belongs to the dataset's domain (`samples_withheld`); without one, the caller is the metastore's own user."""
        address = normalise_address(address)
        with self.store.session() as s:
            ds = s.get(DatasetRow, address)
            if ds is None:
                raise NotFound(f"no dataset {address} in the catalog — fix: `trustmesh search` or "
                               "`trustmesh catalog list` to find it; build it first if it is new")
            product = s.get(ProductRow, ds.product)
            assert product is not None
            cols = s.scalars(select(ColumnRow).where(ColumnRow.dataset == address).order_by(ColumnRow.position)).all()
            domain = s.get(DomainRow, ds.domain)
            latest = self._version_row(s, address, ds.current_version)
            governed = s.get(ProductStatusRow, ds.product)
            masking = declared_masking(ds.contract)
            out = {
                "governance": {"status": governed.status, "reasons": governed.reasons, "deadline": governed.deadline,
                               "evaluated_at": governed.evaluated_at.isoformat()} if governed else None,
                **_dataset_summary(ds, product),
                "sector": domain.sector if domain else None,
                "product_description": product.description,
                "product_status": product.status,
                "tier": product.tier,
                "contract_version": ds.contract_version,
                "sla": ds.contract.get("slaProperties", []),
                "columns": [_column(c, masking) for c in cols],
                "current_version": _version(latest) if latest else None,
                "inputs": product.inputs,
                "quality": {
                    "score": latest.quality_score if latest else None,
                    "summary": latest.quality if latest else {},
                    "freshness": _fresh(ds, latest, utcnow()),
                    "checks": [_result(r) for r in s.scalars(select(QualityResultRow).where(
                        QualityResultRow.dataset == address, QualityResultRow.version == ds.current_version)
                        .order_by(QualityResultRow.id))] if latest else [],
                    "samples_withheld": samples_withheld(reader, ds.domain),
                },
            }
        if out["quality"]["samples_withheld"]:
            out["quality"]["checks"] = [{**c, "samples": []} for c in out["quality"]["checks"]]
        out["owners"] = owners if owners is not None else self.owners(ds.domain)
        return out

    def product(self, address: str, *, reader: Principal | None = None) -> dict[str, Any]:
        """A product and each of its datasets as `show` gives them (to `reader`), with their versions."""
        address = normalise_product_address(address)
        with self.store.session() as s:
            product = s.get(ProductRow, address)
            if product is None:
                raise NotFound(f"no product {address} in the catalog — fix: see `trustmesh catalog list`")
            datasets = s.scalars(select(DatasetRow.address).where(DatasetRow.product == address)
                                 .order_by(DatasetRow.address)).all()
            domain = s.get(DomainRow, product.domain)
            info: dict[str, Any] = {"address": product.address, "domain": product.domain, "name": product.name,
                    "kind": product.kind, "tier": product.tier, "status": product.status, "version": product.version,
                    "description": product.description, "tags": product.tags, "team": product.team,
                    "inputs": product.inputs, "sector": domain.sector if domain else None,
                    "domain_kind": domain.kind if domain else None,
                    "built_at": product.built_at.isoformat() if product.built_at else None}
        owners = self.owners(product.domain)  # one domain, one lookup, for every dataset of the product
        shown = [{**self.show(a, owners=owners, reader=reader), "versions": self.versions(a)} for a in datasets]
        scores = [d["quality"]["score"] for d in shown if d["quality"]["score"] is not None]
        governed = next((d["governance"] for d in shown if d.get("governance")), None)
        return {**info, "owners": owners, "datasets": shown, "governance": governed,
                "quality_score": round(sum(scores) / len(scores), 1) if scores else None,
                "stale": any(d["quality"]["freshness"]["stale"] for d in shown)}

    def quality(self, address: str, *, reader: Principal | None = None) -> dict[str, Any]:
        """The served version's checks, the score's history across versions, and quarantined candidates; failing-row
        samples only for a `reader` of the dataset's own domain (see `show`)."""
        info = self.show(address, reader=reader)
        withheld = info["quality"]["samples_withheld"]
        with self.store.session() as s:
            quarantined = s.scalars(select(QuarantineRow).where(QuarantineRow.dataset == info["address"])
                                    .order_by(QuarantineRow.id.desc())).all()
            failed_runs = {q.build_id: [{**_result(r), **({"samples": []} if withheld else {})} for r in s.scalars(
                select(QualityResultRow).where(QualityResultRow.dataset == info["address"],
                                               QualityResultRow.build_id == q.build_id,
                                               QualityResultRow.version.is_(None)).order_by(QualityResultRow.id))]
                           for q in quarantined}
            return {
                "address": info["address"], "version": info["version"], **info["quality"],
                "history": [{"version": v["version"], "published_at": v["published_at"], "score": v["quality_score"]}
                            for v in self.versions(info["address"])],
                "quarantine": [{"build_id": q.build_id, "data_file": q.data_file, "rows": q.rows, "reason": q.reason,
                                "created_at": q.created_at.isoformat(), "checks": failed_runs[q.build_id]}
                               for q in quarantined],
            }

    def versions(self, address: str) -> list[dict[str, Any]]:
        address = normalise_address(address)
        with self.store.session() as s:
            if s.get(DatasetRow, address) is None:
                raise NotFound(f"no dataset {address} in the catalog — fix: see `trustmesh catalog list`")
            rows = s.scalars(select(VersionRow).where(VersionRow.dataset == address)
                             .order_by(VersionRow.version.desc())).all()
            return [_version(v) for v in rows]

    def version_files(self, address: str, version: int | None = None) -> tuple[int, list[str]]:
        """The data files of a version (default: the one currently served): those its metastore row records
        (each version's Iceberg snapshot holds exactly these), else planned from the snapshot."""
        row = self._resolved_version(address, version)
        key = (row.dataset, row.snapshot_id)
        files = self._snapshot_files.get(key)  # a snapshot is immutable: plan its files once
        if files is None:
            files = self.warehouse.readable(list(row.data_files)) if self.warehouse is not None else None
            if files is None:
                files = snapshot_files(self.iceberg(), row.dataset, row.snapshot_id)
            if len(self._snapshot_files) > 10_000:
                self._snapshot_files.clear()
            self._snapshot_files[key] = files
        return row.version, list(files)

    def stored_files(self, address: str, version: int | None = None) -> tuple[int, list[str]]:
        """A version's data files as the warehouse stores them (s3:// URIs on object storage), read from the
        metastore: nothing is planned or downloaded."""
        row = self._resolved_version(address, version)
        return row.version, list(row.data_files)

    def _resolved_version(self, address: str, version: int | None) -> VersionRow:
        """The row of a version (default: the one currently served), or NotFound naming the versions there are."""
        address = normalise_address(address)
        with self.store.session() as s:
            ds = s.get(DatasetRow, address)
            if ds is None:
                raise NotFound(f"no dataset {address} in the catalog")
            number = version if version is not None else ds.current_version
            row = self._version_row(s, address, number)
            if row is None:
                known = s.scalars(select(VersionRow.version).where(VersionRow.dataset == address)).all()
                raise NotFound(f"{address} has no version {number} — fix: pick one of {sorted(known) or 'none yet'}")
            return row

    def read(self, address: str, version: int | None = None) -> Any:
        """A published version as an Arrow table (for owners and the platform; consumers go through query)."""
        import duckdb

        _, files = self.version_files(address, version)
        con = duckdb.connect()
        try:
            return con.sql(f"SELECT * FROM read_parquet({files!r})").to_arrow_table()
        finally:
            con.close()

    def search(self, text: str, *, limit: int = 50, offset: int = 0, **filters: Any) -> dict[str, Any]:
        """Ranked hits and facet counts. Each dataset is followed by its matching columns; a dataset ranks
        by its best match, its own text or one of its columns'.

        Filters are the indexed facets (domain, sector, product_kind, classification, sensitivity, has_pii) and
        the standing of the served version (quality band, freshness, governance status)."""
        filters = {k: v for k, v in filters.items() if v is not None}
        unknown = set(filters) - set(FACETS) - set(STANDING_FACETS)
        if unknown:
            raise UsageError(f"unknown search filter(s) {sorted(unknown)} — fix: use "
                             f"{', '.join([*FACETS, *STANDING_FACETS])}")
        for facet, allowed in STANDING_FACETS.items():
            if facet in filters and filters[facet] not in allowed:
                raise UsageError(f"{facet} {filters[facet]!r} is not a value of that filter — fix: one of "
                                 f"{', '.join(allowed)}")
        if limit < 1 or offset < 0:
            raise UsageError(f"limit {limit}, offset {offset} — fix: a limit of at least 1 and an offset of 0 or more")
        indexed = {k: v for k, v in filters.items() if k in FACETS}
        with self.store.session() as s:
            raw = search(s, text, indexed, limit=1000)
        groups: dict[str, list[Any]] = {}
        for hit in raw:
            groups.setdefault(hit.dataset, []).append(hit)
        standing = self._standing(list(groups))
        values = {address: standing_facets(standing.get(address, {})) for address in groups}
        wanted = {k: v for k, v in filters.items() if k in STANDING_FACETS}
        groups = {a: g for a, g in groups.items() if all(values[a][k] == v for k, v in wanted.items())}
        ordered = sorted(groups.values(), key=lambda hs: (min(h.rank for h in hs), hs[0].dataset))
        hits: list[dict[str, Any]] = []
        for group in ordered:
            group.sort(key=lambda h: (h.kind != "dataset", h.rank))
            hits += [{**h.to_dict(), **standing.get(h.dataset, {})} if h.kind == "dataset" else h.to_dict()
                     for h in group]
        datasets = [g for g in ordered if any(h.kind == "dataset" for h in g)]
        facets = {f: dict(Counter(str(getattr(h, f)).lower() if f == "has_pii" else getattr(h, f)
                                  for g in datasets for h in g if h.kind == "dataset")) for f in FACETS}
        facets.update({f: dict(Counter(values[g[0].dataset][f] for g in datasets)) for f in STANDING_FACETS})
        return {"query": text, "filters": filters, "hits": hits[offset:offset + limit], "total": len(hits),
                "datasets": len(groups), "facets": facets}

    def lineage(self, target: str, *, direction: str = "up", depth: int | None = None) -> dict[str, Any]:
        """Column-level lineage of a dataset or column of the served versions, upstream or downstream."""
        from trustmesh.catalog.lineage import split_target, walk

        if direction not in ("up", "down"):
            raise UsageError(f"direction {direction!r} — fix: up or down")
        if depth is not None and depth < 1:
            raise UsageError(f"depth {depth} — fix: a number of steps of at least 1, or no depth for all of them")
        with self.store.session() as s:
            dataset, column = split_target(s, target)
            edges = walk(s, dataset, column, direction, depth)
        return {"target": target, "dataset": dataset, "column": column, "direction": direction, "depth": depth,
                "edges": edges, "datasets": sorted({e["source_dataset" if direction == "up" else "dataset"]
                                                   for e in edges})}

    def impact(self, target: str, *, change: str = "drop") -> dict[str, Any]:
        """Who a change to one column would hurt: downstream datasets and columns, products, domains, people."""
        from trustmesh.catalog.lineage import impact, split_target

        if change not in ("drop", "rename", "retype"):
            raise UsageError(f"change {change!r} — fix: drop, rename or retype")
        with self.store.session() as s:
            dataset, column = split_target(s, target)
            if column is None:
                raise UsageError(f"{target!r} names a dataset — fix: name a column, <domain>.<product>.<dataset>.<column>")
            return impact(s, dataset, column, change)

    def consumers(self, address: str) -> dict[str, list[dict[str, Any]]]:
        """Who uses a dataset: active grants (principal, grant, columns, expiry) and the people who queried it in
        the last 30 days — whom a change to it would reach."""
        from trustmesh.catalog.lineage import consumers

        address = normalise_address(address)
        with self.store.session() as s:
            if s.get(DatasetRow, address) is None:
                raise NotFound(f"no dataset {address} in the catalog — fix: see `trustmesh catalog list`")
            grants, queried = consumers(s, [address])
        return {"grants": grants.get(address, []), "queried_by": queried.get(address, [])}

    def findings(self, address: str | None = None) -> list[dict[str, Any]]:
        """Lineage and privacy findings of the served versions."""
        with self.store.session() as s:
            query = select(FindingRow, DatasetRow).join(DatasetRow, (DatasetRow.address == FindingRow.dataset)
                                                        & (DatasetRow.current_version == FindingRow.version))
            if address:
                address = normalise_address(address)
                if s.get(DatasetRow, address) is None:
                    raise NotFound(f"no dataset {address} in the catalog — fix: see `trustmesh catalog list`")
                query = query.where(FindingRow.dataset == address)
            return [{"dataset": f.dataset, "kind": f.kind, "severity": f.severity, "column": f.column,
                     "message": f.message, "build_id": f.build_id, "version": f.version}
                    for f, _ in s.execute(query.order_by(FindingRow.dataset, FindingRow.id)).all()]

    def _standing(self, addresses: list[str]) -> dict[str, dict[str, Any]]:
        """Quality score and staleness of the served version of each dataset, in one query."""
        if not addresses:
            return {}
        now = utcnow()
        with self.store.session() as s:
            rows = s.execute(select(DatasetRow, VersionRow, ProductStatusRow.status)
                             .outerjoin(VersionRow, (VersionRow.dataset == DatasetRow.address)
                                        & (VersionRow.version == DatasetRow.current_version))
                             .outerjoin(ProductStatusRow, ProductStatusRow.product == DatasetRow.product)
                             .where(DatasetRow.address.in_(addresses))).all()
            return {ds.address: {"quality_score": v.quality_score if v else None, "stale": _fresh(ds, v, now)["stale"],
                                 "governance_status": status}
                    for ds, v, status in rows}

    @staticmethod
    def _version_row(s: Session, address: str, number: int | None) -> VersionRow | None:
        if number is None:
            return None
        return s.scalars(select(VersionRow).where(VersionRow.dataset == address, VersionRow.version == number)).first()


def samples_withheld(reader: Principal | None, domain: str) -> str | None:
    """Why a reader does not see a dataset's failing-row samples, or None when they do.

    Samples are rows of the candidate as the build checked it: outside every grant, row filter and aggregate-only
    rule (only personal columns are masked). So only the dataset's own domain, which reads that data anyway, sees
    them; everyone else, governance admins and auditors included, gets the checks and their counts."""
    if reader is None or domain in reader.member_of():
        return None
    return (f"failing-row samples are shown only to the people of {domain}, the dataset's domain: they are rows of "
            "the data as built, outside any grant, row filter or aggregate-only rule — the checks, values and counts "
            f"are complete without them; ask a steward of {domain} about the rows")


def _dataset_summary(ds: DatasetRow, product: ProductRow) -> dict[str, Any]:
    return {"address": ds.address, "name": ds.name, "domain": ds.domain, "product": ds.product,
            "product_kind": product.kind, "description": ds.description, "classification": ds.classification,
            "sensitivity": ds.sensitivity, "has_pii": ds.has_pii, "version": ds.current_version,
            "tags": ds.contract.get("tags", [])}


def _column(c: ColumnRow, declared: dict[str, Any]) -> dict[str, Any]:
    """A column with, when it is personal, the masking a reader without an unmasking grant sees."""
    try:
        masking = choose(c.pii_type, declared.get(c.name)).to_dict() if c.pii_type else None
    except ValueError as exc:  # validate reports an unknown strategy; the catalog still shows the column
        masking = {"strategy": "unknown", "how": str(exc)}
    return {"masking": masking, "name": c.name, "logical_type": c.logical_type, "physical_type": c.physical_type,
            "description": c.description, "required": c.required, "primary_key": c.primary_key,
            "unique": c.unique, "classification": c.classification, "sensitivity": c.sensitivity,
            "pii_type": c.pii_type, "glossary_term": c.glossary_term, "tags": c.tags}


def _version(v: VersionRow) -> dict[str, Any]:
    return {"version": v.version, "published_at": v.published_at.isoformat(), "rows": v.row_count,
            "snapshot_id": v.snapshot_id, "build_id": v.build_id, "contract_version": v.contract_version,
            "columns": v.columns, "inputs": v.inputs, "quality_score": v.quality_score, "quality": v.quality}


def _fresh(ds: DatasetRow, latest: VersionRow | None, now: datetime) -> dict[str, Any]:
    return freshness(ds.contract.get("slaProperties") or [], latest.published_at if latest else None, now)


def _result(r: QualityResultRow) -> dict[str, Any]:
    return {"rule": r.rule, "name": r.name, "source": r.source, "column": r.column, "metric": r.metric,
            "dimension": r.dimension, "severity": r.severity, "operator": r.operator, "threshold": r.threshold,
            "unit": r.unit, "expected": expectation(r.operator, r.threshold, r.unit), "value": r.value,
            "passed": r.passed, "samples": r.samples}
