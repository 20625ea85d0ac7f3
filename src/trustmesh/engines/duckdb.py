"""The embedded engine: DuckDB, in process, reading sources and Parquet, writing Parquet for Iceberg."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import duckdb

try:
    from duckdb.sqltypes import VARCHAR
except ImportError:  # DuckDB 1.x
    from duckdb.typing import VARCHAR  # type: ignore[no-redef]

from trustmesh.engines import Capabilities, ColumnType, QueryFailed, Reach
from trustmesh.sqlguard import ReadRules, verify

_PROMPT = re.compile(r"^FROM read_csv\('(?:[^']|'')*'(.*\))\s*;?$", re.DOTALL)
_INTEGER = re.compile(r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|UHUGEINT|INT[1248]|LONG|SHORT)$")
_NUMBER = re.compile(r"^(DOUBLE|FLOAT|REAL|DECIMAL(\(\d+,\s*\d+\))?|NUMERIC.*|FLOAT[48])$")
_PUBLISH_OVERRIDES = {  # types Iceberg (and Spark) cannot read as DuckDB writes them
    "HUGEINT": "DECIMAL(38,0)",
    "UHUGEINT": "DECIMAL(38,0)",
    "UBIGINT": "DECIMAL(20,0)",
    "UINTEGER": "BIGINT",
    "USMALLINT": "INTEGER",
    "UTINYINT": "SMALLINT",
    "TINYINT": "INTEGER",
    "SMALLINT": "INTEGER",
    "TIMESTAMP_NS": "TIMESTAMP",
    "TIMESTAMP_MS": "TIMESTAMP",
    "TIMESTAMP_S": "TIMESTAMP",
    "UUID": "VARCHAR",
    "INTERVAL": "VARCHAR",
    "TIME": "VARCHAR",  # ISO 'HH:MM:SS[.ffffff]': Spark has no TIME type to read Parquet's into
}
DEFAULT_TYPES = {  # the DuckDB type standing for an ODCS logical type when a contract gives no physicalType
    "integer": "BIGINT", "number": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN", "date": "DATE",
    "timestamp": "TIMESTAMP", "time": "TIME", "array": "VARCHAR[]", "object": "VARCHAR",
}
READER_OPTIONS = {
    "csv": {"delim", "sep", "header", "quote", "escape", "nullstr", "dateformat", "timestampformat", "skip",
            "columns", "types", "auto_detect", "sample_size", "all_varchar", "decimal_separator", "comment", "encoding"},
    "parquet": {"union_by_name", "hive_partitioning", "filename"},
    "json": {"format", "columns", "records", "dateformat", "timestampformat", "auto_detect", "maximum_depth"},
}


_NRIC = re.compile(r"[STFGM][0-9]{7}[A-Z]")


def _token(key: bytes, value: str) -> str | None:
    """The linkage token of an NRIC/FIN: canonical form (upper case, no spaces) first; None if malformed."""
    canonical = "".join(str(value).split()).upper()
    if not _NRIC.fullmatch(canonical):
        return None
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def _connect() -> duckdb.DuckDBPyConnection:
    """A new in-memory database. Datasets are sets: writing them in parallel without keeping row order is
    what makes COPY fast."""
    return duckdb.connect(":memory:", config={"preserve_insertion_order": False})


# Sniffed CSV dialects by file (path, size, modification time), shared by every session of this process:
# a source is sniffed once, by validation's reader, and its bronze copy is read with the same dialect.
_DIALECTS: dict[tuple[str, str, str], str] = {}


def _stamp(paths: str | list[str]) -> str:
    """Which files, as they are now: a changed file is sniffed again."""
    found = []
    for p in [paths] if isinstance(paths, str) else paths:
        try:
            stat = os.stat(p)
            found.append((p, stat.st_size, stat.st_mtime_ns))
        except OSError:
            found.append((p, -1, -1))
    return json.dumps(found)


def _condense(text: str) -> str:
    """DuckDB's multi-paragraph errors as one line: the first paragraph and the file it names."""
    paragraphs = text.strip().split("\n\n")
    head = " ".join(line.strip() for line in paragraphs[0].splitlines() if line.strip())
    files = [line.strip() for line in text.splitlines() if line.strip().startswith("file = ")]
    return (head[:500] + (f" ({files[0]})" if files else "")).strip()


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A Python value as a DuckDB literal (for reader options that come from YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"unsupported option value {value!r}")


def reader_sql(path: str | list[str], fmt: str, options: dict[str, Any]) -> str:
    """`read_csv('data/x.csv', header=true)` etc.; unknown options are refused, not passed through."""
    allowed = READER_OPTIONS[fmt]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown {fmt} reader option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    args = "".join(f", {k}={literal(v)}" for k, v in options.items())
    if fmt == "csv":
        # Pin the dialect so a malformed row is an error, never a reason for the sniffer to guess differently.
        defaults: dict[str, Any] = {"quote": '"', "header": True, "skip": 0}
        if not {"delim", "sep"} & set(options):
            first = path if isinstance(path, str) else path[0]
            defaults["delim"] = "\t" if first.lower().endswith(".tsv") else ","
        args = ", strict_mode=true" + "".join(f", {k}={literal(v)}" for k, v in defaults.items()
                                               if k not in options) + args
    return f"read_{fmt}({literal(path)}{args})"


class DuckDBSession:
    """One in-memory DuckDB connection; sources and versions are bound as views by name."""

    def __init__(self, allowed_directories: list[str] | None = None,
                 token_key: Callable[[str], bytes] | None = None, reach: Reach | None = None,
                 tokens: bool = True, con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.con = con or _connect()
        self.token_purposes: dict[str, str] = {}  # linkage purpose → key id, for the product being built
        if token_key is not None and tokens:
            self._register_person_token(token_key)
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET autoload_known_extensions = false")
        if reach is not None:
            # One product's reach: its own files and folders, nothing else; no network, no extension.
            self.con.execute(f"SET temp_directory = {literal(reach.scratch)}")
            self.con.execute(f"SET allowed_directories = {literal([d.rstrip('/') + '/' for d in (reach.scratch, *reach.folders)])}")
            self.con.execute(f"SET allowed_paths = {literal(sorted(set(reach.files)))}")
            self._lock()
        elif allowed_directories is not None:
            # The platform's own reads (sources, as its readers are told to): the mesh and the warehouse.
            dirs = [d.rstrip("/") + "/" for d in allowed_directories]
            self.con.execute(f"SET allowed_directories = {literal(dirs)}")
            self.con.execute(f"SET temp_directory = {literal(dirs[-1] + 'tmp')}")
            self._lock()

    def _lock(self) -> None:
        """No file outside the allowed ones, and the lock cannot be lifted from inside a query."""
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _register_person_token(self, token_key: Callable[[str], bytes]) -> None:
        """`person_token(purpose, nric)`: HMAC-SHA256 under the purpose's key of the canonical NRIC/FIN.

        The key stays in Python: SQL sees the function's name, never its key. Only the purposes set in
        `token_purposes` (those of the product being built) may be used; anything else is an error.
        """
        import pyarrow as pa

        def person_token(purposes: Any, values: Any) -> Any:
            import pyarrow.compute as pc

            found = pc.unique(purposes).to_pylist()
            for purpose in found:
                if purpose not in self.token_purposes:
                    raise ValueError(f"person_token: {purpose!r} is not a linkage purpose of this product's domain")
            if len(found) == 1:  # the usual case: one purpose, so each distinct value is hashed once
                key = token_key(self.token_purposes[found[0]])
                flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
                encoded = flat.dictionary_encode()
                tokens = pa.array([None if v is None else _token(key, v) for v in encoded.dictionary.to_pylist()],
                                  pa.string())
                return tokens.take(encoded.indices)
            return pa.array([None if value is None else _token(token_key(self.token_purposes[purpose]), value)
                             for purpose, value in zip(purposes.to_pylist(), values.to_pylist(), strict=True)],
                            pa.string())

        self.con.create_function("person_token", person_token, [VARCHAR, VARCHAR], VARCHAR, type="arrow",
                                 null_handling="special", side_effects=False)  # type: ignore[call-overload]

    def _run(self, sql: str) -> duckdb.DuckDBPyConnection:
        try:
            return self.con.execute(sql)
        except duckdb.Error as exc:
            raise QueryFailed(_condense(str(exc)), detail=str(exc)) from exc

    def bind_file(self, view: str, path: str | list[str], fmt: str, options: dict[str, Any], *,
                  same_as: str | list[str] | None = None) -> None:
        """A view over source files. `same_as`: byte-identical files already read, whose CSV dialect is reused."""
        self._run(f"CREATE OR REPLACE VIEW {quote(view)} AS SELECT * FROM {self._reader(path, fmt, options, same_as)}")

    def _reader(self, path: str | list[str], fmt: str, options: dict[str, Any], same_as: str | list[str] | None) -> str:
        """The reader call; a CSV's dialect and column types are sniffed once per file content, then pinned
        (auto_detect=false). `same_as`: byte-identical files whose dialect may already be known (a source and
        its bronze copy); the sniff itself always reads `path`, the file this session is reading."""
        if fmt != "csv":
            return reader_sql(path, fmt, options)
        key = (_stamp(same_as or path), fmt, json.dumps(options, sort_keys=True, default=str))
        pinned = _DIALECTS.get(key)
        if pinned is None:
            first = path if isinstance(path, str) else path[0]
            sniff = reader_sql(first, fmt, options).replace("read_csv(", "sniff_csv(", 1)
            row = self._run(f"SELECT Prompt FROM {sniff}").fetchone()
            found = _PROMPT.match(str(row[0]).strip()) if row else None
            if not found:
                return reader_sql(path, fmt, options)
            if len(_DIALECTS) > 10_000:
                _DIALECTS.clear()
            pinned = _DIALECTS[key] = found.group(1)
        return f"read_csv({literal(path)}{pinned}"

    def bind_parquet(self, view: str, files: list[str], columns: list[str] | None = None) -> None:
        """A view over Parquet files; with `columns`, only those columns exist in it."""
        projection = ", ".join(quote(c) for c in columns) if columns is not None else "*"
        if columns is not None and not columns:
            projection = "NULL AS no_column_granted"
        self._run(f"CREATE OR REPLACE VIEW {quote(view)} AS SELECT {projection} FROM read_parquet({literal(files)})")

    def bind_empty(self, view: str, columns: list[ColumnType]) -> None:
        cols = ", ".join(f"NULL::{c.type} AS {quote(c.name)}" for c in columns)
        self._run(f"CREATE OR REPLACE VIEW {quote(view)} AS SELECT {cols} WHERE false")

    def bind_arrow(self, view: str, table: Any) -> None:
        self.con.register(view, table)

    def syntax_error(self, sql: str) -> tuple[str, int | None] | None:
        """DuckDB's own parser verdict on `sql`: (message, line) when it does not parse, else None."""
        try:
            self.con.extract_statements(sql)
        except duckdb.ParserException as exc:
            text = str(exc).strip()
            found = re.search(r"LINE (\d+):", text)
            return text.splitlines()[0].removeprefix("Parser Error: "), int(found.group(1)) if found else None
        return None

    def describe(self, sql: str) -> list[ColumnType]:
        rows = self._run(f"DESCRIBE {sql}").fetchall()
        return [ColumnType(r[0], r[1]) for r in rows]

    def materialize(self, table: str, sql: str) -> int:
        self._run(f"CREATE OR REPLACE TABLE {quote(table)} AS {sql}")
        row = self._run(f"SELECT count(*) FROM {quote(table)}").fetchone()
        return int(row[0]) if row else 0

    def drop_view(self, view: str) -> None:
        self._run(f"DROP VIEW IF EXISTS {quote(view)}")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._run(sql).fetchall()

    def arrow(self, sql: str) -> Any:
        try:
            return self.con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise QueryFailed(str(exc).strip().splitlines()[0]) from exc

    def write_parquet(self, sql: str, path: str) -> None:
        self._run(f"COPY ({sql}) TO {literal(path)} (FORMAT parquet)")

    def check_read(self, sql: str, relations: set[str], rules: ReadRules) -> None:
        """DuckDB's own reading of `sql`: one SELECT over `relations` (and its CTEs), no refused function."""
        verify(self.con, sql, relations, rules=rules)

    def close(self) -> None:
        self.con.close()


class DuckDBEngine:
    """DuckDB in this process; sessions may only touch `allowed_directories` (the mesh and its warehouse)."""

    name = "duckdb"
    capabilities = Capabilities(
        dialect="duckdb",
        describe_without_running=True,
        reads_formats=("csv", "parquet", "json"),
        writes_parquet=True,
    )

    def __init__(self, allowed_directories: list[str] | None = None,
                 token_key: Callable[[str], bytes] | None = None) -> None:
        self.allowed_directories = allowed_directories
        self.token_key = token_key
        self._spare: list[duckdb.DuckDBPyConnection] = []
        self._spare_lock = threading.Lock()
        self._opening: threading.Thread | None = None

    def session(self, reach: Reach | None = None, *, tokens: bool = True) -> DuckDBSession:
        """A session for the platform's own reads (no reach), or one confined to a product's reach.

        `tokens`: whether `person_token` exists in it (a product of no linkage purpose's domain needs none).
        Product sessions come one after another in a build, so the next one's database is opened while this
        one works (opening one costs ~13 ms); it has no reach until a session sets it, and then locks it.
        """
        opening = self._opening
        if opening is not None:
            opening.join()
        with self._spare_lock:
            con = self._spare.pop() if self._spare else None
        session = DuckDBSession(self.allowed_directories, self.token_key, reach, tokens, con)
        if reach is not None:
            self._opening = threading.Thread(target=self._open_spare, name="trustmesh-session-spare")
            self._opening.start()  # not a daemon: the interpreter waits for it before it shuts down
        return session

    def _open_spare(self) -> None:
        con = _connect()
        with self._spare_lock:
            self._spare.append(con)

    def quote(self, identifier: str) -> str:
        return quote(identifier)

    def logical_type(self, engine_type: str) -> str:
        return logical_type(engine_type)

    def publish_type(self, engine_type: str, physical_type: str | None) -> str | None:
        return publish_type(engine_type, physical_type)


def logical_type(engine_type: str) -> str:
    """A DuckDB type name → the ODCS logical type family it belongs to."""
    t = engine_type.upper().strip()
    if t.endswith("]") or t.startswith("LIST"):
        return "array"
    if t.startswith(("STRUCT", "MAP", "JSON", "UNION")):
        return "object"
    if _INTEGER.match(t):
        return "integer"
    if _NUMBER.match(t):
        return "number"
    if t == "BOOLEAN":
        return "boolean"
    if t == "DATE":
        return "date"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    if t.startswith("TIME"):
        return "time"
    return "string"


def publish_type(engine_type: str, physical_type: str | None) -> str | None:
    """The type a column is cast to on publish (the contract's physicalType, made readable by every engine),
    or None to keep it as it is."""
    if physical_type:
        return _PUBLISH_OVERRIDES.get(physical_type.upper().strip(), physical_type)
    return _PUBLISH_OVERRIDES.get(engine_type.upper())
