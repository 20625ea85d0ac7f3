"""Column lineage from SQL: golden JSON for the SQL shapes products use, and what cannot be resolved."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlglot

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
