"""Publishing: each dataset becomes a new Iceberg snapshot; one metastore transaction makes them all current."""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trustmesh.descriptors import Mesh, Product
from trustmesh.lineage.model import DatasetLineage
from trustmesh.lineage.privacy import Finding
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.iceberg import catalog_warehouse, table_identifier, table_names
from trustmesh.metastore.registry import register_product
from trustmesh.metastore.schema import (
    DatasetRow,
    FindingRow,
    LineageEdgeRow,
    ProductBuildRow,
    QualityResultRow,
    QuarantineRow,
    VersionRow,
    utcnow,
)
from trustmesh.quality import QualityReport

FAULT_ENV = "TRUSTMESH_FAULT"


def fault_point(name: str) -> None:
    """Crash-test hook: when TRUSTMESH_FAULT names this point, the process dies here as if SIGKILLed."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Candidate:
    """A checked dataset written as Parquet, waiting to be published.

    `data_file` is one Parquet file (DuckDB) or a folder of part files (Spark); `files` lists them either way.
    """

    address: str
    data_file: str
    rows: int
    columns: list[dict[str, str]]
    report: QualityReport | None = None
    lineage: DatasetLineage | None = None
    snapshot_id: int | None = None
    # The files as the metastore records them: s3:// URIs when remote, else keys in the warehouse folder.
    published: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return parquet_files(Path(self.data_file))


@dataclass
class Publication:
    product: Product
    build_id: str
    fingerprint: str
    inputs: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def commit_snapshots(catalog: Any, candidates: list[Candidate]) -> None:
    """Phase 1: an Iceberg snapshot per dataset. Not yet served: the metastore still points at the old ones.

    A remote warehouse first receives the candidate's files (their local copies move into its read cache)."""
    import pyarrow.parquet as pq
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import AlwaysTrue

    warehouse = catalog_warehouse(catalog)
    for candidate in candidates:
        identifier = table_identifier(candidate.address)
        files = candidate.files
        schema = pq.read_schema(files[0])
        with warehouse.errors(f"publishing {candidate.address}"):
            stored = warehouse.publish(files)
            if warehouse.is_remote:
                remove_data_file(Path(candidate.data_file))  # what is left of a folder of part files
            catalog.create_namespace_if_not_exists(identifier[:2])
            try:
                table = catalog.load_table(identifier)
            except NoSuchTableError:
                table = catalog.create_table(identifier, schema=schema)
            current = {f.name for f in table.schema().fields}
            wanted = set(schema.names)
            if current != wanted or table.schema().as_arrow() != schema:
                with table.update_schema(allow_incompatible_changes=True) as update:
                    for name in current - wanted:
                        update.delete_column(name)
                    update.union_by_name(schema)
            with table.transaction() as tx:
                if table.current_snapshot() is not None:
                    tx.delete(AlwaysTrue())
                tx.add_files(table_names(catalog, table, identifier, stored), check_duplicate_files=False)
        candidate.published = warehouse.recorded(stored)
        snapshot = table.current_snapshot()
        assert snapshot is not None
        candidate.snapshot_id = snapshot.snapshot_id
        fault_point("publish.after-snapshot")


def record_publication(store: Metastore, mesh: Mesh, pub: Publication, duration_s: float,
                       actor: str = "trustmesh") -> dict[str, int]:
    """Phase 2: one transaction registers the product and moves every dataset to its new version, or none."""
    versions: dict[str, int] = {}
    fault_point("publish.before-record")
    with store.session() as session:
        register_product(session, mesh, pub.product, pub.fingerprint)
        now = utcnow()
        for candidate in pub.candidates:
            latest = session.scalar(select(func.max(VersionRow.version)).where(VersionRow.dataset == candidate.address))
            number = (latest or 0) + 1
            contract = next(o.contract for o in pub.product.outputs if o.address == candidate.address)
            report = candidate.report
            session.add(VersionRow(
                dataset=candidate.address, version=number, snapshot_id=candidate.snapshot_id, build_id=pub.build_id,
                row_count=candidate.rows, published_at=now, contract_version=contract.version if contract else "",
                columns=candidate.columns, data_files=candidate.published or candidate.files, inputs=pub.inputs,
                quality_score=report.score if report else None, quality=report.summary() if report else {},
            ))
            if report:
                record_results(session, candidate.address, pub.build_id, number, report)
            if candidate.lineage is not None:
                record_lineage(session, pub.product, candidate.lineage, number)
            for finding in pub.findings:
                if finding.dataset == candidate.address:
                    session.add(FindingRow(dataset=finding.dataset, kind=finding.kind, severity=finding.severity,
                                           column=finding.column, message=finding.message, build_id=pub.build_id,
                                           version=number, created_at=now))
            dataset = session.get(DatasetRow, candidate.address)
            assert dataset is not None
            dataset.current_version = number
            versions[candidate.address] = number
        session.add(ProductBuildRow(build_id=pub.build_id, product=pub.product.address, status="published",
                                    fingerprint=pub.fingerprint, rows=sum(c.rows for c in pub.candidates),
                                    duration_s=duration_s, finished_at=now,
                                    message=", ".join(f"{a} v{v}" for a, v in versions.items())))
        session.flush()
        audit.append(session, "product.published", actor, pub.product.address, {
            "build": pub.build_id, "versions": versions, "rows": sum(c.rows for c in pub.candidates),
            "snapshots": {c.address: c.snapshot_id for c in pub.candidates}}, at=now)
        fault_point("publish.before-commit")
    return versions


def source_name(product: Product, reference: str) -> str:
    """How lineage names an input: a dataset by its address, an external source as `source:<product>.<port>`."""
    return reference if reference.count(".") >= 2 else f"source:{product.address}.{reference}"


def record_lineage(session: Session, product: Product, lineage: DatasetLineage, version: int) -> None:
    """The version's column-level edges, one row per source column and transformation."""
    for column in lineage.columns.values():
        for ref, transformations in column.inputs.items():
            for t in transformations:
                session.add(LineageEdgeRow(dataset=lineage.address, version=version, column=column.column,
                                           source_dataset=source_name(product, ref.dataset), source_column=ref.column,
                                           type=t.type, subtype=t.subtype, masking=t.masking))


def record_results(session: Session, address: str, build_id: str, version: int | None, report: QualityReport) -> None:
    """Every check's outcome, stamped on the version it judged (or on the quarantined candidate)."""
    now = utcnow()
    for result in report.results:
        r = result.rule
        session.add(QualityResultRow(
            dataset=address, build_id=build_id, version=version, rule=r.id, name=r.name, source=r.source, column=r.column,
            metric=r.metric, dimension=r.dimension, severity=r.severity, operator=r.operator,
            threshold=list(r.threshold), unit=r.unit, value=result.value, passed=result.passed,
            samples=result.samples, checked_at=now,
        ))


def quarantine(store: Metastore, warehouse: Path, address: str, build_id: str, data_file: Path,
               report: QualityReport) -> Path:
    """Move a failing candidate aside, with its results: inspectable, never served."""
    domain, product, dataset = table_identifier(address)
    target = warehouse / "quarantine" / domain / product / dataset / data_file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(data_file, target)
    failed = [r.rule.name for r in report.failed("error")]
    with store.session() as session:
        session.add(QuarantineRow(dataset=address, build_id=build_id, data_file=str(target), rows=report.rows,
                                  reason="failed: " + ", ".join(failed), created_at=utcnow()))
        record_results(session, address, build_id, None, report)
    return target


def data_file_path(warehouse: Path, address: str, build_id: str) -> Path:
    domain, product, dataset = table_identifier(address)
    return warehouse / "data" / domain / product / dataset / f"{build_id}.parquet"


def parquet_files(path: Path) -> list[str]:
    """The Parquet files a candidate is made of: the file itself, or a folder's part files in name order."""
    if path.is_dir():
        return sorted(str(p) for p in path.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))
    return [str(path)]


def remove_data_file(path: Path) -> None:
    """Delete a candidate, be it one file or a folder of part files; nothing there is fine."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
