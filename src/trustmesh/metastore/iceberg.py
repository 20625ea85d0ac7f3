"""The Iceberg catalog of published datasets, living in the metastore database (pyiceberg's SQL catalog)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.catalog.sql import SqlCatalog


def iceberg_catalog(metastore_url: str, warehouse: Path) -> SqlCatalog:
    """Open the SQL catalog on the metastore's database, with data and metadata under `warehouse`."""
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse.mkdir(parents=True, exist_ok=True)
    return SqlCatalog("trustmesh", uri=metastore_url, warehouse=warehouse.resolve().as_uri())


def table_identifier(address: str) -> tuple[str, str, str]:
    """`bts.flights-dp.flights` → the Iceberg identifier (namespace bts.flights-dp, table flights)."""
    domain, product, dataset = address.split(".")
    return (domain, product, dataset)


def snapshot_files(catalog: SqlCatalog, address: str, snapshot_id: int) -> list[str]:
    """The Parquet data files of one snapshot of a dataset: what DuckDB reads for that version."""
    table = catalog.load_table(table_identifier(address))
    files = [task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()]
    return [f.removeprefix("file://") for f in files]
