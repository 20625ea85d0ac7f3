"""The embedded engine: DuckDB, in process, reading sources and Parquet, writing Parquet for Iceberg."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
CSV_ENCODINGS = ("utf-8", "utf-16", "latin-1")  # what the CSV reader decodes (any other needs an extension)


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


_CSV_ERROR = re.compile(r"CSV Error on Line: (\d+)\s*\nOriginal Line: ([^\n]*)\n([^\n]*)")
_COLUMNS_FOUND = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")


def _condense(text: str) -> str:
    """DuckDB's multi-paragraph errors as one line: the first paragraph and the file it names.

    A CSV row error of one file becomes the line and what is wrong with it (the problem names the file);
    DuckDB's "possible fixes" go, since they name reader options (strict_mode, ignore_errors, ...) a source may
    not set.
    """
    files = [line.strip() for line in text.splitlines() if line.strip().startswith("file = ")]
    where = f" ({files[0]})" if files else ""
    found = _CSV_ERROR.search(text)
    if found and len(files) == 1:  # the file is the problem's: its line, and what is wrong there
        line, original, cause = found.groups()
        counts = _COLUMNS_FOUND.search(cause)
        if counts:
            return f"line {line} has {counts[2]} fields where the header has {counts[1]}: {original[:120]}"
        if "not utf-8 encoded" in cause.lower():  # DuckDB's "Original Line" is then the line before it
            return f"line {line} is not UTF-8 text"
        return f"line {line}: {cause.strip()[:300]}"
    paragraphs = text.strip().split("\n\n")
    kept = []
    for line in paragraphs[0].splitlines():
        if line.strip().startswith(("Possible fix", "Possible Solution")):
            break
        kept.append(line.strip())
    head = " ".join(line for line in kept if line)
    return (head[:500] + where).strip()


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
        defaults = _csv_defaults(path if isinstance(path, str) else path[0], options)
        args = ", strict_mode=true" + "".join(f", {k}={literal(v)}" for k, v in defaults.items()
                                               if k not in options) + args
    return f"read_{fmt}({literal(path)}{args})"


def _csv_defaults(first: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The dialect the platform pins for a CSV source, before its own options."""
    defaults: dict[str, Any] = {"quote": '"', "header": True, "skip": 0}
    if not {"delim", "sep"} & set(options):
        defaults["delim"] = "\t" if first.lower().endswith(".tsv") else ","
    return defaults


@dataclass(frozen=True)
class CsvFault:
    """Why the CSV reader cannot read a file as its source options say: where, the cause, and the fix."""

    message: str
    line: int | None = None
    option: dict[str, Any] = field(default_factory=dict)  # reader options that should read it (check by reading)
    fix: str = ""  # what to do when no option does


_FAULT_BYTES = 8 << 20  # what csv_fault reads: the sniffer's sample (20,480 rows) of any sane width fits in it
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def csv_fault(path: str, options: Mapping[str, Any], columns: list[str] | None = None) -> CsvFault | None:
    """Why the CSV reader cannot read `path` as `options` say, found by reading the file's start the way the
    reader does (DuckDB's sniffer names neither the row nor the option); None when nothing is found.

    `columns`: what the reader made of the file when it could read it. Then only what it reads without
    complaint is looked for: one column of `a;b;c` (another delimiter), a header without rows, no data at all.
    """
    dialect = {**_csv_defaults(path, options), **options}
    try:
        with open(path, "rb") as fh:
            data = fh.read(_FAULT_BYTES if columns is None or len(columns) == 1 else 1 << 16)
            complete = not fh.read(1)
    except OSError:
        return None  # what the reader said stands
    if complete and not data.strip():
        return CsvFault("the file is empty" if not data else "the file holds only blank lines",
                        fix="put the data in it: a header line, then one line per row")
    text, fault = _decode(data, str(dialect.get("encoding") or "utf-8").lower(), complete)
    if fault is not None or text is None:  # bytes not of the encoding: so whatever the reader made of them
        return fault
    return _dialect_fault(io.StringIO(text, newline="").readlines(), dialect, columns, complete)


def _decode(data: bytes, encoding: str, complete: bool) -> tuple[str | None, CsvFault | None]:
    """The file's start as text, or why it is not in the encoding its options say."""
    width = "le" if data.startswith(b"\xff\xfe") else "be" if data.startswith(b"\xfe\xff") else _utf16_order(data)
    if width == "be":
        return None, CsvFault("the file is UTF-16 big-endian, which the CSV reader cannot decode", 1,
                              fix="save it as UTF-8 (or as UTF-16 little-endian, with `encoding: utf-16`)")
    if encoding == "utf-16":
        even = data[: len(data) - len(data) % 2]
        return even.decode("utf-16" if data.startswith(b"\xff\xfe") else "utf-16-le", errors="replace"), None
    if encoding == "latin-1":
        return data.decode("latin-1"), None
    if encoding != "utf-8":
        return None, None  # not one the reader knows: validation reports the option itself
    if width == "le":
        return None, CsvFault("the file is UTF-16 text, not UTF-8", 1, {"encoding": "utf-16"}, fix="save it as UTF-8")
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not complete and number == len(lines):
                break  # cut inside a character where reading stopped
            byte = raw[exc.start]
            stray = {ord(c) - 0xDC00 for c in data.decode("utf-8", "surrogateescape") if "\udc80" <= c <= "\udcff"}
            if any(0x80 <= b <= 0x9F for b in stray):  # Windows-1252 (€, curly quotes): Latin-1 would garble them
                return None, CsvFault(f"line {number} is not UTF-8: byte 0x{byte:02x}; the file looks like Windows-1252, "
                                      "which the CSV reader cannot decode", number, fix="save it as UTF-8")
            return None, CsvFault(f"line {number} is not UTF-8: byte 0x{byte:02x} ({bytes([byte]).decode('latin-1')!r} "
                                  "in Latin-1)", number, {"encoding": "latin-1"}, fix="save it as UTF-8")
    return data.decode("utf-8-sig", errors="replace"), None


def _utf16_order(data: bytes) -> str | None:
    """'le' or 'be' when text without a byte order mark has every other byte NUL, as UTF-16 has."""
    sample = data[:4096]
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < 4:
        return None
    if odd.count(0) > len(odd) // 3 and even.count(0) == 0:
        return "le"
    if even.count(0) > len(even) // 3 and odd.count(0) == 0:
        return "be"
    return None


def _dialect_fault(lines: list[str], dialect: dict[str, Any], columns: list[str] | None,
                   complete: bool) -> CsvFault | None:
    """The first row the pinned dialect cannot read: another delimiter, a row of another width, a quote left open;
    or no rows at all."""
    delim = str(dialect.get("delim", dialect.get("sep", ",")))
    quote = str(dialect.get("quote") or '"')
    escape = str(dialect.get("escape") or quote)
    if len(delim) != 1 or len(quote) != 1 or len(escape) != 1:
        return None  # a dialect Python's csv module cannot mirror
    skip: int = dialect["skip"] if isinstance(dialect.get("skip"), int) else 0
    comment = str(dialect.get("comment") or "")
    body = ["\n" if comment and line.startswith(comment) else line for line in lines[skip:]]
    if not complete:
        body = body[:-1]  # the last line may be cut where reading stopped
    reader = csv.reader(body, delimiter=delim, quotechar=quote, doublequote=escape == quote,
                        escapechar=None if escape == quote else escape, strict=True)
    width: int | None = None
    first = start = rows = done = 0
    try:
        for record in reader:
            start, done = skip + done + 1, reader.line_num
            if not record:
                continue  # a blank line: the reader skips it
            if width is None:
                width, first = len(record), start
                fault = _delimiter_fault(lines[start - 1], delim, start) if width == 1 else None
                if fault is not None:
                    return fault
                continue
            rows += 1
            if columns is None and len(record) != width:
                shown = lines[start - 1].rstrip("\r\n")
                header = "the header" if dialect.get("header", True) else f"line {first}"
                return CsvFault(f"line {start} has {len(record)} fields where {header} has {width}: "
                                f"{shown[:120]}{'…' if len(shown) > 120 else ''}", start,
                                fix=f"correct line {start}: every row has {width} fields, and a value holding "
                                    f"{delim!r} is quoted ({quote}a{delim} b{quote})")
    except csv.Error as exc:
        if columns is not None or not complete:
            return None
        if "end of data" in str(exc):
            opened = skip + done + 1  # the row being read when the file ended
            return CsvFault(f"the quoted value opened on line {opened} is never closed", opened,
                            fix=f"close the quote (a {quote} inside a quoted value is written twice: {quote * 2})")
        return CsvFault(f"line {skip + reader.line_num}: {exc}", skip + reader.line_num,
                        fix=f"correct the quoting (a {quote} inside a quoted value is written twice: {quote * 2})")
    if width is None and complete:
        return CsvFault("the file holds no rows", fix="put the data in it: a header line, then one line per row")
    if rows == 0 and complete and dialect.get("header", True) and not {"types", "columns"} & set(dialect) \
            and not dialect.get("all_varchar"):
        return CsvFault("the file has a header line but no rows, so its columns cannot be typed", first,
                        fix="add its rows below the header (a source that is empty on purpose declares its column "
                            "types in its options: `types: {column: TYPE}`, or `all_varchar: true`)")
    return None


def _delimiter_fault(line: str, delim: str, number: int) -> CsvFault | None:
    """Line `number` reads as one column with `delim`, but splits on another delimiter."""
    widths = {d: len(next(csv.reader([line], delimiter=d))) for d in _DELIMITERS if d != delim and d in line}
    best = max(widths, key=lambda d: widths[d], default=None)
    if best is None or widths[best] < 2:
        return None
    return CsvFault(f"line {number} reads as one column: its {widths[best]} fields are separated by {best!r} "
                    f"({_DELIMITERS[best]}), not {delim!r}", number, {"delim": best},
                    fix=f"save the file with {delim!r} between fields")


@dataclass
class Purposes:
    """The linkage purposes a session's `person_token` may use; set once the session knows its product."""

    purposes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """A new database with no extension loading and, given a key, `person_token`: a session's start."""

    con: duckdb.DuckDBPyConnection
    purposes: Purposes
    tokens: bool


def prepare(token_key: Callable[[str], bytes] | None) -> Prepared:
    """Open a database for a session; ahead of need, on a thread, when a build's products come one by one."""
    con = _connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    purposes = Purposes()
    if token_key is not None:
        _register_person_token(con, token_key, purposes)
    return Prepared(con, purposes, token_key is not None)


def _register_person_token(con: duckdb.DuckDBPyConnection, token_key: Callable[[str], bytes],
                           allowed: Purposes) -> None:
    """`person_token(purpose, nric)`: HMAC-SHA256 under the purpose's key of the canonical NRIC/FIN.

    The key stays in Python: SQL sees the function's name, never its key. Only the purposes in `allowed`
    (those of the product being built) may be used; anything else is an error.
    """
    import pyarrow as pa

    def person_token(purposes: Any, values: Any) -> Any:
        import pyarrow.compute as pc

        found = pc.unique(purposes).to_pylist()
        for purpose in found:
            if purpose not in allowed.purposes:
                raise ValueError(f"person_token: {purpose!r} is not a linkage purpose of this product's domain")
        if len(found) == 1:  # the usual case: one purpose, so each distinct value is hashed once
            key = token_key(allowed.purposes[found[0]])
            flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
            encoded = flat.dictionary_encode()
            tokens = pa.array([None if v is None else _token(key, v) for v in encoded.dictionary.to_pylist()],
                              pa.string())
            return tokens.take(encoded.indices)
        return pa.array([None if value is None else _token(token_key(allowed.purposes[purpose]), value)
                         for purpose, value in zip(purposes.to_pylist(), values.to_pylist(), strict=True)],
                        pa.string())

    con.create_function("person_token", person_token, [VARCHAR, VARCHAR], VARCHAR, type="arrow",
                        null_handling="special", side_effects=False)  # type: ignore[call-overload]


class DuckDBSession:
    """One in-memory DuckDB connection; sources and versions are bound as views by name."""

    def __init__(self, allowed_directories: list[str] | None = None,
                 token_key: Callable[[str], bytes] | None = None, reach: Reach | None = None,
                 tokens: bool = True, prepared: Prepared | None = None) -> None:
        """`prepared`: a database opened ahead of need by `prepare` with the same `token_key`."""
        if prepared is None:
            prepared = prepare(token_key)
        self.con = prepared.con
        self._purposes = prepared.purposes  # linkage purpose → key id, for the product being built
        if prepared.tokens and not (token_key is not None and tokens):
            self.con.remove_function("person_token")
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

    @property
    def token_purposes(self) -> dict[str, str]:
        """The linkage purposes `person_token` may use in this session (those of the product being built)."""
        return self._purposes.purposes

    @token_purposes.setter
    def token_purposes(self, purposes: dict[str, str]) -> None:
        self._purposes.purposes = dict(purposes)

    def _lock(self) -> None:
        """No file outside the allowed ones, and the lock cannot be lifted from inside a query."""
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

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
        self._spare: list[Prepared] = []
        self._spare_lock = threading.Lock()
        self._opening: threading.Thread | None = None

    def session(self, reach: Reach | None = None, *, tokens: bool = True) -> DuckDBSession:
        """A session for the platform's own reads (no reach), or one confined to a product's reach.

        `tokens`: whether `person_token` exists in it (a product of no linkage purpose's domain needs none).
        Product sessions come one after another in a build, so the next one's database is opened while this
        one works (opening one, with `person_token`, costs ~20-30 ms); it has no reach until a session sets
        it, and then locks it.
        """
        opening = self._opening
        if opening is not None:
            opening.join()
        with self._spare_lock:
            prepared = self._spare.pop() if self._spare else None
        session = DuckDBSession(self.allowed_directories, self.token_key, reach, tokens, prepared)
        if reach is not None:
            self._opening = threading.Thread(target=self._open_spare, name="trustmesh-session-spare")
            self._opening.start()  # not a daemon: the interpreter waits for it before it shuts down
        return session

    def _open_spare(self) -> None:
        prepared = prepare(self.token_key)
        with self._spare_lock:
            self._spare.append(prepared)

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
