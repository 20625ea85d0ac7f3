"""Build engines behind one small interface; what each supports is data, never `isinstance` checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from trustmesh.errors import TrustmeshError, UsageError
from trustmesh.sqlguard import ReadRules


class QueryFailed(TrustmeshError, RuntimeError):
    """The engine could not run a statement (bad SQL, unreadable source, bad data); the message says why."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; core code asks these questions instead of asking which engine it is."""

    dialect: str
    describe_without_running: bool
    reads_formats: tuple[str, ...]
    writes_parquet: bool
    native_iceberg: bool = False


@dataclass(frozen=True)
class Reach:
    """What one session may open, and nothing else: files to read, folders to read and write, a scratch folder.

    A build of one product runs with exactly that product's reach (its landed inputs, the upstream files it
    was granted, its candidates), so its SQL cannot open another domain's files, the platform's state or its
    keys by any spelling. An empty reach opens no file at all (validation's dry runs read typed stand-ins).
    """

    scratch: str
    files: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()


@dataclass(frozen=True)
class ColumnType:
    name: str
    type: str


class EngineSession(Protocol):
    """One connection of an engine for one product build: views in, tables out."""

    def bind_file(self, view: str, path: str | list[str], fmt: str, options: dict[str, Any], *,
                  same_as: str | list[str] | None = None) -> None: ...
    token_purposes: dict[str, str]  # linkage purposes the product being built may tokenise under (→ key id)

    def bind_parquet(self, view: str, files: list[str], columns: list[str] | None = None) -> None: ...
    def bind_empty(self, view: str, columns: list[ColumnType]) -> None: ...
    def bind_arrow(self, view: str, table: Any) -> None: ...
    def syntax_error(self, sql: str) -> tuple[str, int | None] | None: ...
    def describe(self, sql: str) -> list[ColumnType]: ...
    def materialize(self, table: str, sql: str) -> int: ...
    def drop_view(self, view: str) -> None: ...
    def query(self, sql: str) -> list[tuple[Any, ...]]: ...
    def write_parquet(self, sql: str, path: str) -> None: ...
    def check_read(self, sql: str, relations: set[str], rules: ReadRules) -> None: ...
    def close(self) -> None: ...


class Engine(Protocol):
    name: str
    capabilities: Capabilities

    def session(self, reach: Reach | None = None, *, tokens: bool = True) -> EngineSession: ...
    def logical_type(self, engine_type: str) -> str: ...
    def publish_type(self, engine_type: str, physical_type: str | None) -> str | None: ...
    def quote(self, identifier: str) -> str: ...


def get_engine(name: str, allowed_directories: list[str] | None = None,
               token_key: Callable[[str], bytes] | None = None, settings: dict[str, Any] | None = None) -> Engine:
    """The engine registered under `name` (imported lazily: heavy engines cost nothing until used).

    `allowed_directories`: the only places its sessions may read or write (the mesh and the warehouse).
    `settings`: the engine's own (for spark: master and conf).
    """
    if name == "duckdb":
        from trustmesh.engines.duckdb import DuckDBEngine

        return DuckDBEngine(allowed_directories, token_key)
    if name == "spark":
        from trustmesh.engines.spark import SparkEngine

        return SparkEngine(allowed_directories, token_key, **(settings or {}))
    raise UsageError(f"unknown engine {name!r} — fix: set platform.engine in mesh.yaml to one of: duckdb, spark")


LOGICAL_FAMILIES: dict[str, tuple[str, ...]] = {
    "integer": ("integer",),
    "number": ("integer", "number"),
    "string": ("string",),
    "boolean": ("boolean",),
    "date": ("date",),
    "timestamp": ("timestamp",),
    "time": ("time", "string"),  # published as ISO text: Spark cannot read Parquet TIME
    "array": ("array",),
    "object": ("object",),
}


def type_fits(contract_logical: str, engine_logical: str) -> bool:
    """Whether a column of the engine's logical type satisfies the contract's logical type."""
    return engine_logical in LOGICAL_FAMILIES.get(contract_logical, (contract_logical,))
