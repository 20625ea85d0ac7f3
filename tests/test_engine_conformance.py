"""The engine conformance suite: every demo product built on DuckDB and on Spark gives the same rows.

Rows are compared as sets (order-insensitive); floating-point values agree to a relative 1e-9, since the
engines sum in different orders. Needs pyspark and Java 17+: skipped with the reason where either is missing.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from meshfactory import base_files, column, contract_yaml, product_input, product_yaml, spark_missing

from trustmesh.errors import InvalidMesh

pytestmark = pytest.mark.spark

REL_TOL = 1e-9


if (_reason := spark_missing()) is not None:
    pytest.skip(_reason, allow_module_level=True)


def _set_engine(root: Path, engine: str) -> None:
    mesh = yaml.safe_load((root / "mesh.yaml").read_text())
    mesh.setdefault("platform", {})["engine"] = engine
    mesh["platform"]["spark"] = {"master": "local[2]"}
    (root / "mesh.yaml").write_text(yaml.safe_dump(mesh, sort_keys=False))


@pytest.fixture(scope="module")
def demo_builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """The demo mesh built twice, once per engine, with the same linkage keys (tokens must agree too)."""
    from trustmesh.demo import write_demo
    from trustmesh.demo.access import seed_access
    from trustmesh.service import Workspace

    base = tmp_path_factory.mktemp("conformance")
    tables: dict[str, dict[str, Any]] = {}
    for engine in ("duckdb", "spark"):
        root = base / engine
        write_demo(root)
        _set_engine(root, engine)
        if engine == "spark":  # the same linkage keys, so the tokens must agree too
            _copy_keys(base / "duckdb", root)
        ws = Workspace.open(root)
        try:
            assert seed_access(ws)
            result = ws.build()
            assert result.ok, [r.to_dict() for r in result.products if r.status != "published"]
            tables[engine] = {d["address"]: ws.catalog.read(d["address"]) for d in ws.catalog.datasets()}
        finally:
            ws.close()
    yield tables


def _copy_keys(source: Path, dest: Path) -> None:
    (dest / ".trustmesh").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / ".trustmesh" / "keys.json", dest / ".trustmesh" / "keys.json")


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((v is None, round(v, 6) if isinstance(v, float) else v) for v in row.values())


def same_rows(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> str | None:
    """None when both hold the same rows (floats to REL_TOL), else the first difference."""
    if len(left) != len(right):
        return f"{len(left)} rows vs {len(right)}"
    for a, b in zip(sorted(left, key=_sort_key), sorted(right, key=_sort_key), strict=True):
        for name in a:
            x, y = a[name], b[name]
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=REL_TOL, abs_tol=1e-12):
                    return f"{name}: {x!r} vs {y!r} in {a}"
            elif x != y:
                return f"{name}: {x!r} vs {y!r} in {a}"
    return None


DEMO_DATASETS = [
    "bts.flights-dp.flights", "carriers.airlines-dp.airlines", "commuter.trips-dp.commuters",
    "commuter.trips-dp.trip_tokens", "commuter.trips-dp.trips", "faa.airports-dp.airports", "faa.planes-dp.planes",
    "health.activity-dp.activity_tokens", "health.activity-dp.daily_activity", "health.activity-dp.participants",
    "noaa.weather-dp.weather", "transport-tc.active-commuting-dp.active_commuting",
    "transport-tc.delay-weather-dp.delay_by_weather_route", "transport-tc.punctuality-dp.monthly_carrier_punctuality",
]


def test_both_engines_publish_every_demo_dataset(demo_builds: dict[str, dict[str, Any]]) -> None:
    assert sorted(demo_builds["duckdb"]) == sorted(demo_builds["spark"]) == sorted(DEMO_DATASETS)


@pytest.mark.parametrize("address", DEMO_DATASETS)
def test_a_demo_dataset_has_the_same_schema_and_rows_on_both_engines(demo_builds: dict[str, dict[str, Any]],
                                                                   address: str) -> None:
    duck, spark = demo_builds["duckdb"][address], demo_builds["spark"][address]
    assert duck.num_rows > 0
    assert duck.schema.names == spark.schema.names
    assert [str(t) for t in duck.schema.types] == [str(t) for t in spark.schema.types]
    assert same_rows(duck.to_pylist(), spark.to_pylist()) is None, same_rows(duck.to_pylist(), spark.to_pylist())


def test_the_comparison_itself_catches_a_difference() -> None:
    rows = [{"a": 1, "x": 0.1 + 0.2}, {"a": 2, "x": None}]
    assert same_rows(rows, [{"a": 2, "x": None}, {"a": 1, "x": 0.3}]) is None  # order and float rounding
    assert same_rows(rows, [{"a": 1, "x": 0.30001}, {"a": 2, "x": None}]) is not None
    assert same_rows(rows, [{"a": 1, "x": 0.3}, {"a": 3, "x": None}]) is not None
    assert same_rows(rows, rows[:1]) is not None


# -- a mesh whose products choose their engines --------------------------------------------------------------


def _engine_of(files: dict[str, Any], product_file: str, engine: str) -> None:
    files[product_file].setdefault("customProperties", []).append({"property": "engine", "value": engine})


def _rows(ws: Any) -> dict[str, list[dict[str, Any]]]:
    return {d["address"]: ws.catalog.read(d["address"]).to_pylist() for d in ws.catalog.datasets()}


ALPHA = "domains/alpha/products/shop-dp/product.yaml"
BETA = "domains/beta/products/stats-dp/product.yaml"


@pytest.mark.parametrize(("alpha", "beta"), [("spark", "duckdb"), ("duckdb", "spark")])
def test_products_built_on_different_engines_feed_each_other(make_mesh: Any, alpha: str, beta: str) -> None:
    reference = make_mesh(base_files())
    assert reference.build().ok
    files = base_files()
    _engine_of(files, ALPHA, alpha)
    _engine_of(files, BETA, beta)
    ws = make_mesh(files)
    assert ws.mesh.products["alpha.shop-dp"].engine == alpha
    result = ws.build()
    assert result.ok, result.to_dict()
    expected, got = _rows(reference), _rows(ws)
    assert sorted(got) == sorted(expected)
    for address in expected:
        assert same_rows(expected[address], got[address]) is None, address
    assert {r.status for r in ws.build().products} == {"skipped"}  # fingerprints hold across engines


def test_an_unknown_engine_is_refused_naming_the_choices(make_mesh: Any) -> None:
    files = base_files()
    _engine_of(files, ALPHA, "presto")
    ws = make_mesh(files)
    problems = [p for p in ws.validate() if "engine" in p.message]
    assert [(p.file, p.severity) for p in problems] == [(ALPHA, "error")]
    assert "presto" in problems[0].message and "duckdb, spark" in problems[0].fix
    with pytest.raises(InvalidMesh):
        ws.build()


def _spark_mesh(sql: str) -> dict[str, Any]:
    files = base_files()
    files["mesh.yaml"].setdefault("platform", {})["engine"] = "spark"
    files["mesh.yaml"]["platform"]["spark"] = {"master": "local[2]"}
    files["domains/beta/products/stats-dp/sql/daily_sales.sql"] = sql
    return files


@pytest.mark.parametrize(("sql", "construct"), [
    ("SELECT sold_on, list_reduce([items, items], (x, y) -> x + y) AS items, 1.0 AS revenue "
     "FROM (SELECT sold_on, count(*) AS items FROM alpha.\"shop-dp\".items GROUP BY sold_on)", "LIST_REDUCE"),
    ("SELECT i.sold_on, count(*) AS items, sum(i.price) AS revenue FROM alpha.\"shop-dp\".items AS i "
     "ASOF JOIN alpha.\"shop-dp\".items AS j ON i.sold_on >= j.sold_on GROUP BY i.sold_on", "ASOF"),
])
def test_sql_spark_cannot_run_is_a_clear_error_naming_the_construct_and_file(make_mesh: Any, sql: str,
                                                                            construct: str) -> None:
    ws = make_mesh(_spark_mesh(sql))
    with pytest.raises(InvalidMesh) as caught:
        ws.build()
    problems = [p for p in caught.value.problems if p.severity == "error"]
    assert problems, caught.value.problems
    problem = problems[0]
    assert problem.file == "domains/beta/products/stats-dp/sql/daily_sales.sql"
    assert construct in problem.message.upper() and "Spark cannot run it" in problem.message
    assert "org.apache" not in problem.message and "Traceback" not in problem.message and "\n" not in problem.message
    assert ws.catalog.datasets() == []  # nothing was built


def test_types_spark_cannot_read_from_duckdb_parquet_are_cast_at_publish(make_mesh: Any) -> None:
    """UUID, nanosecond timestamps, INTERVAL and TIME, published by DuckDB, read by a product on Spark."""
    files = base_files()
    files["domains/alpha/products/shop-dp/sql/cheap_items.sql"] = (
        "SELECT item_id, name, uuid() AS ref, CAST(sold_on AS TIMESTAMP_NS) AS sold_at, INTERVAL 90 MINUTE AS "
        "wait, TIME '10:30:00' AS opens FROM raw_items WHERE price < 1.8")
    contract = files["domains/alpha/products/shop-dp/contracts/cheap_items.odcs.yaml"]
    contract["schema"][0]["properties"] += [column("ref", "string"), column("sold_at", "timestamp"),
                                            column("wait", "string"), column("opens", "time")]
    files["domains/beta/products/stats-dp/product.yaml"] = product_yaml(
        "beta", "stats-dp", ["cheap"], [product_input("alpha.shop-dp.cheap_items")], kind="aggregated")
    _engine_of(files, BETA, "spark")
    files["domains/beta/products/stats-dp/sql/cheap.sql"] = (
        "SELECT item_id, ref, sold_at, wait, opens FROM alpha.\"shop-dp\".cheap_items")
    files["domains/beta/products/stats-dp/contracts/cheap.odcs.yaml"] = contract_yaml("beta", "stats-dp", "cheap", [
        column("item_id", "integer"), column("ref", "string"), column("sold_at", "timestamp"),
        column("wait", "string"), column("opens", "time")])
    files.pop("domains/beta/products/stats-dp/sql/daily_sales.sql", None)
    files.pop("domains/beta/products/stats-dp/contracts/daily_sales.odcs.yaml", None)
    ws = make_mesh(files)
    result = ws.build()
    assert result.ok, result.to_dict()
    upstream = {r["item_id"]: r for r in ws.catalog.read("alpha.shop-dp.cheap_items").to_pylist()}
    downstream = ws.catalog.read("beta.stats-dp.cheap").to_pylist()
    assert sorted(r["item_id"] for r in downstream) == sorted(upstream) == [1, 3]
    for row in downstream:
        assert row["ref"] == upstream[row["item_id"]]["ref"] and len(row["ref"]) == 36
        assert row["sold_at"] == upstream[row["item_id"]]["sold_at"]
        assert row["wait"] == upstream[row["item_id"]]["wait"] and row["opens"].startswith("10:30")


def test_a_failing_check_on_spark_quarantines_the_part_files_and_keeps_the_previous_version(make_mesh: Any) -> None:
    from meshfactory import ITEMS_CSV, write_files

    files = _spark_mesh(base_files()["domains/beta/products/stats-dp/sql/daily_sales.sql"])
    files["domains/alpha/products/shop-dp/contracts/items.odcs.yaml"]["schema"][0]["properties"][2]["quality"] = [
        {"name": "known-prices", "metric": "invalidValues", "arguments": {"validValues": [0.5, 1.5, 2.0]}, "mustBe": 0}]
    ws = make_mesh(files)
    assert ws.build().ok
    write_files(ws.root, {"domains/alpha/products/shop-dp/data/items.csv": ITEMS_CSV + "4,fig,9.0,2024-01-03\n"})
    result = ws.build()
    assert [r.status for r in result.products] == ["failed", "blocked"]
    assert "'known-prices' failed: invalidValues is 1, expected = 0" in result.products[0].problems[0].message
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 3  # version 1 stays served
    [held] = ws.catalog.quality("alpha.shop-dp.items")["quarantine"]
    assert held["rows"] == 4 and Path(held["data_file"]).is_dir()
    assert any(c["name"] == "known-prices" and c["samples"] == [{"item_id": 4, "price": 9.0}] for c in held["checks"])
