"""Column lineage from SQL: golden JSON for the SQL shapes products use, and what cannot be resolved."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.lineage.extract import extract_lineage

GOLDEN = Path(__file__).parent / "golden" / "lineage"
SCHEMA = {
    "in__flights": {"flight_id": "BIGINT", "carrier": "VARCHAR", "origin": "VARCHAR", "dep_delay": "DOUBLE",
                    "time_hour": "TIMESTAMPTZ", "month": "INTEGER"},
    "in__weather": {"origin": "VARCHAR", "time_hour": "TIMESTAMPTZ", "visib": "DOUBLE", "wind_speed": "DOUBLE"},
    "in__people": {"nric": "VARCHAR", "name": "VARCHAR", "age": "INTEGER"},
}
REFERENCES = {"in__flights": "bts.flights-dp.flights", "in__weather": "noaa.weather-dp.weather", "in__people": "raw_people"}

SHAPES = {
    "identity": "SELECT flight_id, carrier FROM in__flights",
    "star": "SELECT * FROM in__people",
    "cte": "WITH late AS (SELECT * FROM in__flights WHERE dep_delay > 15) SELECT carrier, dep_delay FROM late",
    "join": "SELECT f.flight_id, w.visib FROM in__flights f JOIN in__weather w "
            "ON f.origin = w.origin AND f.time_hour = w.time_hour",
    "aggregate": "SELECT carrier, avg(dep_delay) AS mean_delay, count(*) AS flights FROM in__flights GROUP BY carrier",
    "union": "SELECT origin AS airport FROM in__flights UNION ALL SELECT origin FROM in__weather",
    "window": "SELECT flight_id, rank() OVER (PARTITION BY carrier ORDER BY dep_delay) AS delay_rank FROM in__flights",
    "subquery": "SELECT carrier, d FROM (SELECT carrier, dep_delay * 60 AS d FROM in__flights) AS s ORDER BY d",
    "case": "SELECT flight_id, CASE WHEN dep_delay > 15 THEN 'late' ELSE 'on time' END AS status FROM in__flights",
    "masking": "SELECT md5(nric) AS person_token, age FROM in__people",
}


def lineage_of(sql: str) -> dict[str, object]:
    return extract_lineage("d.p.out", sqlglot.parse_one(sql, read="duckdb"), SCHEMA, REFERENCES).to_dict()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_lineage_golden(shape: str) -> None:
    got = json.dumps({"sql": SHAPES[shape], "lineage": lineage_of(SHAPES[shape])}, indent=2, sort_keys=True) + "\n"
    golden = GOLDEN / f"{shape}.json"
    if os.environ.get("TRUSTMESH_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text()


def _edges(sql: str) -> dict[str, set[tuple[str, str, str, str, bool]]]:
    out: dict[str, set[tuple[str, str, str, str, bool]]] = {}
    for col in lineage_of(sql)["columns"]:  # type: ignore[attr-defined]
        out[col["column"]] = {(i["dataset"], i["column"], t["type"], t["subtype"], t["masking"])
                              for i in col["inputs"] for t in i["transformations"]}
    return out


def test_transformation_types() -> None:
    join = _edges(SHAPES["join"])
    assert ("noaa.weather-dp.weather", "visib", "DIRECT", "IDENTITY", False) in join["visib"]
    assert ("bts.flights-dp.flights", "origin", "INDIRECT", "JOIN", False) in join["visib"]
    agg = _edges(SHAPES["aggregate"])
    assert ("bts.flights-dp.flights", "dep_delay", "DIRECT", "AGGREGATION", False) in agg["mean_delay"]
    assert ("bts.flights-dp.flights", "carrier", "INDIRECT", "GROUP_BY", False) in agg["flights"]
    cte = _edges(SHAPES["cte"])
    assert ("bts.flights-dp.flights", "dep_delay", "INDIRECT", "FILTER", False) in cte["carrier"]
    window = _edges(SHAPES["window"])
    assert ("bts.flights-dp.flights", "carrier", "INDIRECT", "WINDOW", False) in window["delay_rank"]
    case = _edges(SHAPES["case"])
    assert ("bts.flights-dp.flights", "dep_delay", "INDIRECT", "CONDITIONAL", False) in case["status"]
    assert ("raw_people", "nric", "DIRECT", "TRANSFORMATION", True) in _edges(SHAPES["masking"])["person_token"]
    union = _edges(SHAPES["union"])
    assert {e[0] for e in union["airport"]} == {"bts.flights-dp.flights", "noaa.weather-dp.weather"}
    assert ("bts.flights-dp.flights", "dep_delay", "INDIRECT", "SORT", False) in _edges(SHAPES["subquery"])["d"]


@pytest.mark.parametrize("sql, words", [
    ("SELECT origin FROM in__flights f JOIN in__weather w ON f.time_hour = w.time_hour", "'origin'"),
    ("SELECT nosuch FROM in__flights", "nosuch"),
    ("SELECT * FROM in__unknown", "in__unknown"),
])
def test_unresolvable_sql_is_reported_never_a_silent_gap(sql: str, words: str) -> None:
    result = lineage_of(sql)
    assert result["complete"] is False
    assert any(words.lower() in u.lower() for u in result["unresolved"]), result["unresolved"]  # type: ignore[attr-defined]


def test_lineage_accounts_for_every_column_the_engine_returns() -> None:
    tree = sqlglot.parse_one("SELECT COLUMNS('flight_id|carrier') FROM in__flights", read="duckdb")
    result = extract_lineage("d.p.out", tree, SCHEMA, REFERENCES, expected=["flight_id", "carrier"])
    assert not result.complete and "flight_id" in result.unresolved[0]


SHOP = "domains/alpha/products/shop-dp"


def test_demo_lineage_crosses_three_domains_and_names_who_a_change_hurts(tmp_path: Path) -> None:
    from trustmesh.demo import write_demo
    from trustmesh.demo.access import seed_access
    from trustmesh.service import Workspace

    write_demo(tmp_path / "demo")
    ws = Workspace.open(tmp_path / "demo")
    seed_access(ws)
    assert ws.build("+transport-tc.delay-weather-dp").ok
    up = ws.catalog.lineage("transport-tc.delay-weather-dp.delay_by_weather_route")
    assert {"bts.flights-dp.flights", "noaa.weather-dp.weather", "faa.airports-dp.airports"} <= set(up["datasets"])
    edges = {(e["source_dataset"], e["source_column"], e["column"], e["type"]) for e in up["edges"]}
    assert ("noaa.weather-dp.weather", "condition", "weather_condition", "DIRECT") in edges
    assert ("faa.airports-dp.airports", "name", "origin_name", "DIRECT") in edges
    assert any(e[0] == "source:bts.flights-dp.raw_flights" for e in edges)  # through bronze to the source
    hurt = ws.catalog.impact("bts.flights-dp.flights.dep_delay", change="drop")
    assert "transport-tc.delay-weather-dp" in hurt["products"] and hurt["domains"] == ["bts", "transport-tc"]
    assert hurt["datasets"][0]["dataset"] == "bts.flights-dp.flights"  # the changed dataset itself comes first
    assert hurt["datasets"][0]["columns"][0]["via"] == ["itself"]
    assert next(d for d in hurt["datasets"] if d["domain"] == "transport-tc")["owners"]["data-domain-steward"] == [
        "Ravi Chandran"]
    assert all(c["effect"].startswith("breaks") for d in hurt["datasets"] for c in d["columns"])
    from trustmesh.catalog.lineage import render

    assert render(up["edges"], "mermaid").startswith("graph LR")
    assert render(up["edges"], "dot").startswith("digraph lineage")
    from trustmesh.errors import NotFound

    with pytest.raises(NotFound):
        ws.catalog.lineage("bts.flights-dp.nope")
    with pytest.raises(NotFound, match="no column"):
        ws.catalog.impact("bts.flights-dp.flights.nope")
    ws.close()


def test_columns_derived_from_nric_are_personal_data(tmp_path: Path) -> None:
    from trustmesh.demo import write_demo
    from trustmesh.lineage.privacy import derived_pii, known_pii
    from trustmesh.service import Workspace

    write_demo(tmp_path / "demo")
    ws = Workspace.open(tmp_path / "demo")
    assert ws.build("health").ok and ws.build("commuter").ok
    for product, dataset in (("health.activity-dp", "daily_activity"), ("commuter.trips-dp", "commuters")):
        lineages = []
        for output in ws.mesh.products[product].outputs:
            edges = ws.catalog.lineage(output.address)["edges"]
            from trustmesh.lineage.model import ColumnLineage, ColumnRef, DatasetLineage, Transformation

            lin = DatasetLineage(output.address)
            for e in edges:
                if e["depth"] == 1:
                    ref = ColumnRef(e["source_dataset"].rsplit(".", 1)[-1], e["source_column"])
                    lin.columns.setdefault(e["column"], ColumnLineage(e["column"])).add(
                        ref, Transformation(e["type"], e["subtype"], e["masking"]))
            lineages.append(lin)
        pii = known_pii(ws.mesh, ws.mesh.products[product], lineages)
        derived = derived_pii(next(lin for lin in lineages if lin.address.endswith(dataset)), pii)
        assert derived["nric"][0] == "nric", derived
    assert ws.catalog.findings() == []  # the demo declares all its personal data
    ws.close()


def test_undeclared_derived_pii_and_missing_lineage_are_findings(make_mesh: Any) -> None:
    from meshfactory import base_files, column, contract_yaml, product_input, product_yaml

    files = base_files()
    files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"][1]["customProperties"] = [
        {"property": "piiType", "value": "name"}]
    files["domains/beta/products/names-dp/product.yaml"] = product_yaml(
        "beta", "names-dp", ["shoppers"], [product_input("alpha.shop-dp.items")], kind="consumer-aligned")
    files["domains/beta/products/names-dp/sql/shoppers.sql"] = 'SELECT upper(name) AS shopper FROM alpha."shop-dp".items\n'
    files["domains/beta/products/names-dp/contracts/shoppers.odcs.yaml"] = contract_yaml(
        "beta", "names-dp", "shoppers", [column("shopper", "string")])
    files[f"{SHOP}/sql/cheap_items.sql"] = "SELECT COLUMNS('item_id|name') FROM raw_items WHERE price < 1.8\n"
    ws = make_mesh(files)
    assert ws.build().ok
    found = {(f["dataset"], f["kind"], f["column"]) for f in ws.catalog.findings()}
    assert ("beta.names-dp.shoppers", "undeclared-pii", "shopper") in found
    assert ("alpha.shop-dp.cheap_items", "no-lineage", None) in found
    assert ("alpha.shop-dp.items", "undeclared-pii", "name") not in found


def test_impact_names_the_consumers_holding_active_grants_on_what_a_change_reaches(make_mesh: Any) -> None:
    """beta.stats-dp.daily_sales reads alpha's prices: whoever holds a live grant on it is told; a revoked grant is not."""
    ws = make_mesh()
    assert ws.build().ok

    def grant(who: str) -> str:
        req = ws.access.request(who, "beta.stats-dp.daily_sales", purpose="Weekly revenue dashboard",
                                purpose_category="statistics", days=30)
        while req["state"] == "pending":
            req = ws.access.approve(req["awaiting"][0], req["id"], note="ok")
        return str(req["grant"])

    grant("alpha-dev")
    revoked = grant("alpha-steward")
    ws.access.revoke("beta-owner", revoked, reason="no longer needed")
    result = ws.catalog.impact("alpha.shop-dp.items.price", change="retype")
    daily = next(d for d in result["datasets"] if d["dataset"] == "beta.stats-dp.daily_sales")
    assert [(c["principal"], c["kind"]) for c in daily["consumers"]] == [("alpha-dev", "person")]
    assert daily["consumers"][0]["grant"].startswith("grant-") and daily["consumers"][0]["columns"] is None
    assert daily["queried_by"] == []
    # The changed dataset itself is among them: the product reading it holds a grant on it.
    own = result["datasets"][0]
    assert own["dataset"] == "alpha.shop-dp.items" and own["columns"] == [
        {"column": "price", "via": ["itself"], "effect": "consumers read other values or a different type"}]
    assert [(c["principal"], c["kind"]) for c in own["consumers"]] == [("beta.stats-dp", "product")]
    # People who queried a dataset lately are named too, from the audit trail: how often and when last.
    for _ in range(2):
        ws.query("alpha-dev", 'SELECT sum(revenue) FROM beta."stats-dp".daily_sales')
    result = ws.catalog.impact("alpha.shop-dp.items.price", change="drop")
    daily = next(d for d in result["datasets"] if d["dataset"] == "beta.stats-dp.daily_sales")
    assert [(q["principal"], q["queries"]) for q in daily["queried_by"]] == [("alpha-dev", 2)]
    assert result["datasets"][0]["queried_by"] == []  # nobody queried the items themselves
    assert ws.catalog.consumers("beta.stats-dp.daily_sales")["queried_by"] == daily["queried_by"]
    out = CliRunner().invoke(app, ["impact", "alpha.shop-dp.items.price", "--mesh", str(ws.root)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "alpha-dev" in out.output and "beta.stats-dp" in out.output and "queried in the last 30 days" in out.output
