"""The Iceberg catalog of published datasets, living in the metastore database (pyiceberg's SQL catalog).

A local warehouse's tables name their files by absolute paths; a catalog opened on a mesh folder that moved
maps the folder they name to the one it is in now (`metastore/relocation.py`).
"""

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
    if not warehouse.is_remote:  # a bucket stays where it is when the mesh folder moves
        from trustmesh.metastore.relocation import Relocation, earlier_roots

        catalog.properties.update(Relocation(warehouse.location,
                                             earlier_roots(_tables(catalog), warehouse.location)).properties())
    return catalog


def _tables(catalog: SqlCatalog) -> list[tuple[str, str, str | None]]:
    """Every table of the catalog: (namespace, name, metadata location), as its rows hold them."""
    from pyiceberg.catalog.sql import IcebergTables
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(catalog.engine) as session:
        rows = session.execute(select(IcebergTables.table_namespace, IcebergTables.table_name,
                                      IcebergTables.metadata_location)
                               .where(IcebergTables.catalog_name == catalog.name)).all()
    return [(namespace, name, location) for namespace, name, location in rows]


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
    from trustmesh.metastore.relocation import Relocation

    warehouse = catalog_warehouse(catalog)
    relocation = Relocation.of(catalog.properties)
    with warehouse.errors(f"reading the snapshot of {address}"):
        table = catalog.load_table(table_identifier(address))
        files = [task.file.file_path for task in table.scan(snapshot_id=snapshot_id).plan_files()]
        if relocation is not None:  # the files of a moved mesh's folder, where they are now
            files = [relocation.current(f) for f in files]
        return warehouse.local_files(files)


def table_names(catalog: Any, table: Any, identifier: tuple[str, str, str], files: list[str]) -> list[str]:
    """Files of the warehouse as `table` names them when they are added to it: under the folder the table was
    created in, so that one table's metadata never mixes folders (see `metastore/relocation.py`)."""
    from trustmesh.metastore.relocation import Relocation

    relocation = Relocation.of(catalog.properties)
    if relocation is None:
        return files
    return [relocation.named_by(table.location(), identifier, f) for f in files]
