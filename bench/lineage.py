"""Benchmark: column-lineage queries (upstream, downstream, impact) on a large synthetic mesh, and extraction.

A mesh of 20 domains x 10 pipelines x 10 layers (source-aligned -> aggregated -> consumer-aligned) = 2,000
datasets of 50 columns, each column with DIRECT edges from its inputs and the INDIRECT edges (join keys,
filters, group-by, sort) its dataset's SQL applies to every row, ~500k edges in all, is written straight into
a fresh metastore: SQLite in a temp folder, and PostgreSQL in a throwaway database when a server answers on
127.0.0.1. Random start columns are walked through `trustmesh.catalog.lineage` and checked against a walk of
the same graph in memory. Then the time `extract_lineage` takes per statement of the demo mesh's SQL.
Ends with one line of key=value figures, judged against a 50 ms p95 target.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlglot

from trustmesh.catalog.lineage import impact, walk
from trustmesh.demo import write_demo
from trustmesh.descriptors import load_mesh
from trustmesh.descriptors.sql import parse_product_sql
from trustmesh.engines.duckdb import DuckDBEngine
from trustmesh.lineage.extract import extract_lineage
from trustmesh.metastore import Metastore
from trustmesh.metastore.schema import Base
from trustmesh.validate import DEFAULT_TYPES, file_argument, resolve_views, source_format, view_name

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
TARGET_P95_MS = 50.0
DOMAINS, PIPELINES, LAYERS, COLUMNS = 20, 10, 10, 50
KEYS = 3  # c00..c02 are keys: passed through unchanged, joined and grouped on
ROLES = ("data-owner", "data-domain-steward", "data-product-owner")
Edge = tuple[str, str, str, str, str, str, bool]  # dataset, column, source_dataset, source_column, type, subtype, masking
Node = tuple[str, str]


@dataclass
class Graph:
    """The synthetic mesh as rows for the metastore's tables, plus edge indexes for the in-memory check."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    edges: list[Edge] = field(default_factory=list)
    up: dict[Node, list[Edge]] = field(default_factory=lambda: defaultdict(list))
    down: dict[Node, list[Edge]] = field(default_factory=lambda: defaultdict(list))
    columns: list[Node] = field(default_factory=list)


def kind_of(layer: int) -> str:
    return "source-aligned" if layer < 3 else "aggregated" if layer < 7 else "consumer-aligned"


def address(domain: int, pipeline: int, layer: int) -> str:
    return f"dom{domain:02d}.p{pipeline:02d}-l{layer}-dp.ds_{pipeline:02d}_{layer}"


def col(j: int) -> str:
    return f"c{j:02d}"


def generate(seed: int, domains: int = DOMAINS) -> Graph:
    """Each dataset reads the previous layer of its pipeline, sometimes also an earlier dataset of its own or
    another domain (a join); layer 0 reads a raw source. Each column has a DIRECT edge from the same column of
    the main input, sometimes a second DIRECT edge, and the dataset's INDIRECT edges."""
    rng = random.Random(seed)
    g = Graph()
    now = datetime.now(UTC)
    for d in range(domains):
        domain = f"dom{d:02d}"
        g.rows["tm_domains"].append({"name": domain, "kind": "aligned", "sector": f"sector{d % 5}",
                                     "description": "", "glossary": []})
        for role_no, role in enumerate(ROLES):
            person = f"{domain}-person{role_no}"
            g.rows["tm_people"].append({"id": person, "name": f"Person {role_no} of {domain}",
                                        "email": f"{person}@example.org", "domain": domain, "clearance": None,
                                        "attributes": {}})
            g.rows["tm_roles"].append({"person_id": person, "role": role, "domain": domain})
        for p in range(PIPELINES):
            for k in range(LAYERS):
                ds = address(d, p, k)
                product = ds.rsplit(".", 1)[0]
                g.rows["tm_products"].append({
                    "address": product, "domain": domain, "name": product.split(".")[1], "kind": kind_of(k),
                    "tier": "gold", "status": "active", "version": "1.0.0", "description": {}, "tags": [],
                    "team": [], "inputs": [], "descriptor": {}, "fingerprint": None, "built_at": now})
                g.rows["tm_datasets"].append({
                    "address": ds, "product": product, "domain": domain, "name": ds.rsplit(".", 1)[1],
                    "description": "", "contract": {}, "contract_version": "1.0.0", "classification": None,
                    "sensitivity": "non-sensitive", "has_pii": False, "iceberg_table": f"{domain}.{ds}",
                    "current_version": 1})
                for j in range(COLUMNS):
                    g.columns.append((ds, col(j)))
                    g.rows["tm_columns"].append({
                        "dataset": ds, "name": col(j), "position": j, "logical_type": "string",
                        "physical_type": None, "description": "", "required": j < KEYS, "primary_key": j == 0,
                        "unique": False, "classification": None, "sensitivity": "non-sensitive", "pii_type": None,
                        "glossary_term": None, "tags": []})
                _dataset_edges(rng, g, d, p, k, domains)
    g.edges = list(dict.fromkeys(g.edges))
    for e in g.edges:
        g.up[(e[0], e[1])].append(e)
        g.down[(e[2], e[3])].append(e)
    g.rows["tm_lineage_edges"] = [{"dataset": e[0], "version": 1, "column": e[1], "source_dataset": e[2],
                                   "source_column": e[3], "type": e[4], "subtype": e[5], "masking": e[6]}
                                  for e in g.edges]
    return g


def _dataset_edges(rng: random.Random, g: Graph, d: int, p: int, k: int, domains: int) -> None:
    ds = address(d, p, k)
    if k == 0:
        inputs = [f"source:dom{d:02d}.p{p:02d}-l0-dp.raw_{p:02d}"]
    else:
        inputs = [address(d, p, k - 1)]
        for _ in range((rng.random() < 0.5) + (rng.random() < 0.12)):
            inputs.append(address(d if rng.random() < 0.7 else rng.randrange(domains), rng.randrange(PIPELINES),
                                  rng.randrange(k)))
    main = inputs[0]
    indirect = [(main, col(rng.randrange(KEYS, COLUMNS)), "FILTER")]
    for other in inputs[1:]:
        indirect += [(main, col(0), "JOIN"), (other, col(0), "JOIN")]
    if 3 <= k < 7:
        indirect.append((main, col(1), "GROUP_BY"))
    if rng.random() < 0.5:
        indirect.append((main, col(rng.randrange(COLUMNS)), "SORT"))
    if rng.random() < 0.3:
        indirect.append((main, col(rng.randrange(KEYS, COLUMNS)), "CONDITIONAL"))
    for j in range(COLUMNS):
        subtype = "IDENTITY" if j < KEYS else "AGGREGATION" if 3 <= k < 7 and j % 4 == 0 else "TRANSFORMATION"
        g.edges.append((ds, col(j), main, col(j), "DIRECT", subtype, False))
        if rng.random() < 0.75:
            masked = rng.random() < 0.02
            g.edges.append((ds, col(j), rng.choice(inputs), col(rng.randrange(COLUMNS)), "DIRECT", "TRANSFORMATION",
                            masked))
        for source, column, how in indirect:
            g.edges.append((ds, col(j), source, column, "INDIRECT", how, False))


def expected_walk(g: Graph, start: Node, direction: str, depth: int | None) -> dict[Edge, int]:
    """Breadth-first in memory: every reachable edge with its smallest distance (what `walk` must return)."""
    index = g.up if direction == "up" else g.down
    seen, frontier, found, level = {start}, [start], {}, 0
    while frontier and (depth is None or level < depth):
        level += 1
        nxt = []
        for node in frontier:
            for e in index.get(node, ()):
                found.setdefault(e, level)
                far = (e[2], e[3]) if direction == "up" else (e[0], e[1])
                if far not in seen:
                    seen.add(far)
                    nxt.append(far)
        frontier = nxt
    return found


def load(store: Metastore, g: Graph, chunk: int = 20_000) -> float:
    started = time.perf_counter()
    with store.engine.begin() as conn:
        for name in ("tm_domains", "tm_people", "tm_roles", "tm_products", "tm_datasets", "tm_columns",
                     "tm_lineage_edges"):
            table, rows = Base.metadata.tables[name], g.rows[name]
            for i in range(0, len(rows), chunk):
                conn.execute(table.insert(), rows[i:i + chunk])
    if store.dialect == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does soon after a bulk load
    return time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(store: Metastore, g: Graph, starts: list[Node], warmup: list[Node]) -> dict[str, float]:
    """p50/p95 ms of each query kind over the start columns; every walk is checked against the in-memory one."""
    figures: dict[str, float] = {}
    kinds: list[tuple[str, str, int | None]] = [("up5", "up", 5), ("up_all", "up", None), ("down5", "down", 5),
                                                ("down_all", "down", None)]
    for label, direction, depth in kinds:
        for node in warmup:
            with store.session() as s:
                walk(s, node[0], node[1], direction, depth)
        times, sizes = [], []
        for node in starts:
            started = time.perf_counter()
            with store.session() as s:
                edges = walk(s, node[0], node[1], direction, depth)
            times.append((time.perf_counter() - started) * 1000)
            got = {(e["dataset"], e["column"], e["source_dataset"], e["source_column"], e["type"], e["subtype"],
                    e["masking"]): e["depth"] for e in edges}
            want = expected_walk(g, node, direction, depth)
            assert got == want and len(edges) == len(want), (label, node, len(got), len(want))
            sizes.append(len(edges))
        figures[f"{label}_p50_ms"], figures[f"{label}_p95_ms"] = pct(times, 0.5), pct(times, 0.95)
        figures[f"{label}_edges_p50"], figures[f"{label}_edges_max"] = pct(sizes, 0.5), max(sizes)
    for node in warmup:
        with store.session() as s:
            impact(s, node[0], node[1], "drop")
    times, sizes = [], []
    for node in starts:
        started = time.perf_counter()
        with store.session() as s:
            hurt = impact(s, node[0], node[1], "drop")
        times.append((time.perf_counter() - started) * 1000)
        want_datasets = {e[0] for e in expected_walk(g, node, "down", None)} | {node[0]}  # and the column's own
        assert {d["dataset"] for d in hurt["datasets"]} == want_datasets, node
        assert all(d["owners"]["data-owner"] for d in hurt["datasets"]), node
        sizes.append(len(hurt["datasets"]))
    figures["impact_p50_ms"], figures["impact_p95_ms"] = pct(times, 0.5), pct(times, 0.95)
    figures["impact_datasets_p50"], figures["impact_datasets_max"] = pct(sizes, 0.5), max(sizes)
    return figures


def run_backend(label: str, url: str, g: Graph, starts: list[Node], warmup: list[Node]) -> dict[str, float]:
    store = Metastore.open(url)
    try:
        load_s = load(store, g)
        figures = measure(store, g, starts, warmup)
        figures["load_s"] = load_s
    finally:
        store.dispose()
    report(label, figures)
    return figures


def report(label: str, f: dict[str, float]) -> None:
    print(f"{label}: loaded in {f['load_s']:.1f}s")
    for kind in ("up5", "up_all", "down5", "down_all"):
        print(f"  {kind:9s} p50 {f[f'{kind}_p50_ms']:7.2f} ms  p95 {f[f'{kind}_p95_ms']:7.2f} ms  "
              f"(edges returned: median {f[f'{kind}_edges_p50']:.0f}, max {f[f'{kind}_edges_max']:.0f})")
    print(f"  {'impact':9s} p50 {f['impact_p50_ms']:7.2f} ms  p95 {f['impact_p95_ms']:7.2f} ms  "
          f"(datasets hurt: median {f['impact_datasets_p50']:.0f}, max {f['impact_datasets_max']:.0f})")


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str | None]:
    """A fresh database on the local server, dropped afterwards; None (with the reason printed) without one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # no driver, no server, no permission: all mean "skip PostgreSQL"
        print(f"postgresql: skipped — no server answers at {admin_url} ({type(exc).__name__}: "
              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})")
        yield None
        return
    name = f"trustmesh_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def extraction(work: Path, repeat: int) -> tuple[list[float], int, int]:
    """ms per call of `extract_lineage` on each output of the demo mesh (best of `repeat`), inputs described
    as the build binds them: file inputs through DuckDB's reader, product inputs from their contracts."""
    write_demo(work / "demo")
    mesh, _ = load_mesh(work / "demo")
    datasets = mesh.datasets
    session = DuckDBEngine().session()
    times, complete = [], 0
    try:
        for product in mesh.products.values():
            for output in product.outputs:
                sql, _ = parse_product_sql(output.sql or "", output.sql_file)
                assert sql is not None, output.address
                ports, _ = resolve_views(product, sql)
                schema: dict[str, dict[str, str]] = {}
                for ref, port in ports.items():
                    if port.source.type == "file":
                        session.bind_file(view_name(ref), file_argument(product, port), source_format(port),
                                          port.source.options)
                        schema[view_name(ref)] = {c.name: c.type for c in
                                                  session.describe(f'SELECT * FROM "{view_name(ref)}"')}
                    elif port.source.type == "product":
                        upstream = datasets[port.source.address or ""].contract
                        assert upstream is not None
                        schema[view_name(ref)] = {c.name: c.physical_type or DEFAULT_TYPES[c.logical_type]
                                                  for c in upstream.columns}
                references = {view_name(ref): (port.source.address or port.name) if port.source.type == "product"
                              else port.name for ref, port in ports.items()}
                tree = sqlglot.parse_one(sql.bind({ref: view_name(ref) for ref in ports}), read="duckdb")
                expected = [c.name for c in output.contract.columns] if output.contract else None
                best = float("inf")
                for _ in range(repeat):
                    started = time.perf_counter()
                    result = extract_lineage(output.address, tree, schema, references, expected=expected)
                    best = min(best, (time.perf_counter() - started) * 1000)
                times.append(best)
                complete += result.complete
    finally:
        session.close()
    return times, complete, len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50, help="random start columns per query kind")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each extraction; the best is reported")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--quick", action="store_true", help="2 domains, 10 start columns, one run: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.repeat = 10, 1
    work = Path(tempfile.mkdtemp(prefix="trustmesh-bench-lineage-"))
    try:
        started = time.perf_counter()
        g = generate(args.seed, 2 if args.quick else DOMAINS)
        rng = random.Random(args.seed + 1)
        starts = rng.sample(g.columns, args.samples)
        warmup = rng.sample(g.columns, 5)
        print(f"synthetic mesh: {len(g.rows['tm_datasets']):,} datasets, {len(g.columns):,} columns, "
              f"{len(g.edges):,} edges, generated in {time.perf_counter() - started:.1f}s; "
              f"{args.samples} random start columns per query")
        results: dict[str, dict[str, float]] = {}
        # The in-memory graph (millions of objects) is this script's, not trustmesh's: keep the collector from
        # scanning it in the middle of a timed query.
        gc.collect()
        gc.freeze()
        try:
            results["sqlite"] = run_backend("sqlite", f"sqlite:///{work / 'metastore.db'}", g, starts, warmup)
            if not args.no_postgres:
                with postgres_database(PG_URL) as url:
                    if url is not None:
                        results["pg"] = run_backend("postgresql", url, g, starts, warmup)
        finally:
            gc.unfreeze()
        times, complete, statements = extraction(work, args.repeat)
        print(f"extraction: {statements} statements of the demo mesh, {complete} with complete lineage; "
              f"mean {statistics.fmean(times):.2f} ms, max {max(times):.2f} ms per statement")
        worst = max(f[f"{k}_p95_ms"] for f in results.values() for k in ("up5", "up_all", "down5", "down_all", "impact"))
        line = [f"columns={len(g.columns)}", f"edges={len(g.edges)}", f"samples={args.samples}"]
        for backend, f in results.items():
            line += [f"{backend}_{k}_p95_ms={f[f'{k}_p95_ms']:.2f}" for k in ("up5", "up_all", "down5", "down_all",
                                                                               "impact")]
            line.append(f"{backend}_load_s={f['load_s']:.1f}")
        if "pg" not in results:
            line.append("pg=skipped")
        line += [f"extract_mean_ms={statistics.fmean(times):.2f}", f"extract_max_ms={max(times):.2f}",
                 f"target_p95_ms={TARGET_P95_MS:.0f}", f"ratio_to_target={worst / TARGET_P95_MS:.2f}"]
        print(" ".join(line))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
