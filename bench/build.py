"""Benchmark: building the demo mesh with trustmesh vs running the same SQL directly in DuckDB.

trustmesh's build adds validation, bronze landing, contract checks, Parquet + Iceberg publishing and the
metastore on top of the SQL itself; this measures what that costs. Both runs happen in this process,
on the same files. Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

from trustmesh.demo import write_demo
from trustmesh.demo.access import seed_access
from trustmesh.descriptors import load_mesh
from trustmesh.descriptors.sql import parse_product_sql
from trustmesh.engines.duckdb import DuckDBSession, reader_sql
from trustmesh.plan import select
from trustmesh.service import Workspace
from trustmesh.validate import source_files, source_format, view_name


def direct_sql(root: Path) -> float:
    """Every product's SQL as CREATE TABLE statements on one DuckDB connection, inputs read in place."""
    mesh, _ = load_mesh(root)
    started = time.perf_counter()
    # The same person_token function the build registers (an HMAC in Python), under a throwaway key.
    session = DuckDBSession(token_key=lambda key_id: hashlib.sha256(key_id.encode()).digest())
    session.token_purposes = {p.name: p.key_id for p in mesh.config.linkage}
    con = session.con
    for address in select(mesh, None):
        product = mesh.products[address]
        for port in product.inputs:
            if port.source.type == "file":
                files = source_files(product, port)
                con.execute(f'CREATE OR REPLACE VIEW "{view_name(port.name)}" AS SELECT * FROM '
                            f"{reader_sql(str(files[0]), source_format(port), port.source.options)}")
            else:
                con.execute(f'CREATE OR REPLACE VIEW "{view_name(port.source.address or "")}" AS '
                            f'SELECT * FROM "{port.source.address}"')
        for output in product.outputs:
            sql, _ = parse_product_sql(output.sql or "", output.sql_file)
            assert sql is not None
            con.execute(f'CREATE TABLE "{output.address}" AS {sql.bind({r: view_name(r) for r in sql.references})}')
    con.close()
    return time.perf_counter() - started


def trustmesh_build(root: Path) -> tuple[float, float, int]:
    ws = Workspace.open(root)
    assert seed_access(ws)  # the grants products need to read other domains (not timed)
    started = time.perf_counter()
    result = ws.build()
    build_s = time.perf_counter() - started
    assert result.ok, [r.to_dict() for r in result.products if r.status not in ("published", "skipped")]
    started = time.perf_counter()
    again = Workspace.open(root).build()
    noop_s = time.perf_counter() - started
    assert {r.status for r in again.products} == {"skipped"}
    rows = sum(r.rows for r in result.products)
    ws.close()
    return build_s, noop_s, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the best is reported")
    parser.add_argument("--quick", action="store_true", help="one run of each side: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    work = Path(tempfile.mkdtemp(prefix="trustmesh-bench-"))
    try:
        write_demo(work / "source")
        direct = min(direct_sql(work / "source") for _ in range(args.repeat))
        runs = []
        for i in range(args.repeat):
            root = work / f"run{i}"
            shutil.copytree(work / "source", root)
            runs.append(trustmesh_build(root))
        build_s, noop_s, rows = min(runs)
        print(f"demo mesh: {rows:,} rows published; direct SQL {direct:.2f}s, trustmesh build {build_s:.2f}s, "
              f"no-change rebuild {noop_s:.2f}s (best of {args.repeat})")
        print(f"rows={rows} build_s={build_s:.3f} direct_sql_s={direct:.3f} ratio={build_s / direct:.2f} "
              f"noop_rebuild_s={noop_s:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
