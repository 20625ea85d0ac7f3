"""The Iceberg catalog of published datasets, living in the metastore database (pyiceberg's SQL catalog)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmesh.metastore.storage import Warehouse

if TYPE_CHECKING:
    from pyiceberg.catalog.sql import SqlCatalog

WAREHOUSE_ATTRIBUTE = "trustmesh_warehouse"  # the Warehouse a catalog was opened on, for its readers and writers


def iceberg_catalog(metastore_url: str, warehouse: Warehouse | Path) -> SqlCatalog:
    """Open the SQL catalog on the metastore's database, with data and metadata in the warehouse
    (a local folder, or a bucket through pyiceberg's PyArrow FileIO)."""
    from pyiceberg.catalog.sql import SqlCatalog

    if isinstance(warehouse, Path):
        warehouse = Warehouse(warehouse)
    warehouse.local.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog("trustmesh", uri=metastore_url, warehouse=warehouse.location,
                         **warehouse.iceberg_properties())
    setattr(catalog, WAREHOUSE_ATTRIBUTE, warehouse)
    return catalog


def catalog_warehouse(catalog: Any) -> Warehouse:
    """The warehouse an Iceberg catalog stores its tables in (opened by `iceberg_catalog`)."""
    warehouse = getattr(catalog, WAREHOUSE_ATTRIBUTE, None)
    if not isinstance(warehouse, Warehouse):
        raise TypeError("the Iceberg catalog was not opened by trustmesh.metastore.iceberg.iceberg_catalog")
    return warehouse


def table_identifier(address: str) -> tuple[str, str, str]:
    """`bts.flights-dp.flights` → the Iceberg identifier (namespace bts.flights-dp, table flights)."""
    domain, product, dataset = address.split(".")
    return (domain, product, dataset)


def snapshot_files(catalog: SqlCatalog, address: str, snapshot_id: int) -> list[str]:
    """The Parquet data files of one snapshot of a dataset, as local paths: what DuckDB reads for that version.

    The one place snapshot files become readable paths: a remote warehouse's objects come from its read cache."""
    warehouse = catalog_warehouse(catalog)
    with warehouse.errors(f"reading the snapshot of {address}"):
        table = catalog.load_table(table_identifier(address))
        files = [task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()]
        return warehouse.local_files(files)
