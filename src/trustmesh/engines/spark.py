"""The scale-out engine: Apache Spark (local mode on a laptop, `spark.master` from mesh.yaml for a cluster).

The rest of trustmesh speaks one SQL dialect, DuckDB's. This engine translates at its boundary: SQL in
is transpiled by sqlglot to Spark SQL (a construct that does not translate is a clear error naming it),
and the types Spark reports come back under their DuckDB names, so contracts, quality checks, lineage
and the catalog read the same whichever engine built a product. Sources are read by DuckDB's own
readers into Parquet first (the same dialect sniffing and types on both engines), then by Spark.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

from trustmesh.engines import Capabilities, ColumnType, QueryFailed, Reach
from trustmesh.engines.duckdb import _PUBLISH_OVERRIDES, DuckDBSession, _token, logical_type, publish_type
from trustmesh.engines.duckdb import quote as duckdb_quote
from trustmesh.sqlguard import ReadRules, check_tree

# Settings no mesh.yaml may change: SQL names views, never files (`parquet.`/path`` is refused).
LOCKED_CONF = {"spark.sql.runSQLOnFiles": "false"}
DEFAULT_CONF = {
    # A candidate is a set: few, large files; timestamps as Iceberg and DuckDB read them.
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.ansi.enabled": "false",  # DuckDB's casts are lenient the same way only where they agree
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.hadoop.parquet.enable.summary-metadata": "false",
}
_SPARK_LOCK = threading.Lock()


def _duckdb_type(dt: Any) -> str:
    """A Spark DataType under the name DuckDB's DESCRIBE gives the same type."""
    from pyspark.sql import types as T

    simple = {
        T.ByteType: "TINYINT", T.ShortType: "SMALLINT", T.IntegerType: "INTEGER", T.LongType: "BIGINT",
        T.FloatType: "FLOAT", T.DoubleType: "DOUBLE", T.StringType: "VARCHAR", T.BooleanType: "BOOLEAN",
        T.DateType: "DATE", T.TimestampType: "TIMESTAMP WITH TIME ZONE", T.TimestampNTZType: "TIMESTAMP",
        T.BinaryType: "BLOB", T.NullType: '"NULL"',
    }
    for kind, name in simple.items():
        if isinstance(dt, kind):
            return name
    if isinstance(dt, T.DecimalType):
        return f"DECIMAL({dt.precision},{dt.scale})"
    if isinstance(dt, T.ArrayType):
        return f"{_duckdb_type(dt.elementType)}[]"
    if isinstance(dt, T.MapType):
        return f"MAP({_duckdb_type(dt.keyType)}, {_duckdb_type(dt.valueType)})"
    if isinstance(dt, T.StructType):
        return "STRUCT(" + ", ".join(f"{duckdb_quote(f.name)} {_duckdb_type(f.dataType)}" for f in dt.fields) + ")"
    if isinstance(dt, T.CharType | T.VarcharType):
        return "VARCHAR"
    return "INTERVAL" if "Interval" in type(dt).__name__ else dt.simpleString().upper()


def _for_spark(node: exp.Expression) -> exp.Expression:
    """DuckDB constructs Spark spells differently, rewritten before sqlglot generates Spark SQL."""
    if isinstance(node, exp.DataType):
        duck = node.sql("duckdb").upper()
        if duck in _PUBLISH_OVERRIDES:
            return exp.DataType.build(_PUBLISH_OVERRIDES[duck], dialect="duckdb")
    if isinstance(node, exp.RegexpFullMatch):
        pattern = node.expression
        if isinstance(pattern, exp.Literal) and pattern.is_string:  # Java's regexes anchor like RE2's here
            return exp.RegexpLike(this=node.this, expression=exp.Literal.string(f"^(?:{pattern.this})$"))
    if isinstance(node, exp.Avg) and not (isinstance(node.this, exp.Cast) and node.this.to.is_type("double")):
        # DuckDB's avg is always DOUBLE; Spark's avg of a DECIMAL stays DECIMAL (rounded to scale + 4)
        return exp.Avg(this=exp.cast(node.this, exp.DataType.build("double")))
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct):
        distinct = node.this
        if len(distinct.expressions) == 1 and isinstance(distinct.expressions[0], exp.Tuple):
            # count(DISTINCT (a, b)) counts rows with NULLs too in DuckDB: a struct is never NULL
            fields = distinct.expressions[0].expressions
            distinct.set("expressions", [exp.func("struct", *fields)])
    return node


def _duckdb_only(tree: Any) -> str | None:
    """The first DuckDB construct in `tree` that Spark SQL has no form of, named as the user wrote it."""
    for node in tree.walk():
        if isinstance(node, exp.Join) and str(node.args.get("method") or "").upper() in ("ASOF", "POSITIONAL"):
            return f"{str(node.args['method']).upper()} JOIN"
        if isinstance(node, exp.Star) and (node.args.get("except_") or node.args.get("replace")):
            return "SELECT * EXCLUDE/REPLACE (list the columns instead)"
        if isinstance(node, exp.Columns):
            return "COLUMNS(...) (list the columns instead)"
    return None


def to_spark_sql(sql: str) -> str:
    """DuckDB SQL as Spark SQL; raises QueryFailed naming the construct Spark has no equivalent of."""
    try:
        trees = sqlglot.parse(sql, read="duckdb")
    except ParseError as exc:
        raise QueryFailed(f"the SQL does not parse (DuckDB dialect): {str(exc).splitlines()[0]}") from exc
    out = []
    for tree in trees:
        if tree is None:
            continue
        construct = _duckdb_only(tree)
        if construct:
            raise QueryFailed(f"Spark cannot run it: {construct} is DuckDB SQL with no Spark equivalent — fix: "
                              "rewrite it with SQL both engines have, or build this product on engine: duckdb")
        try:
            out.append(tree.transform(_for_spark).sql("spark", unsupported_level=ErrorLevel.RAISE))
        except UnsupportedError as exc:
            raise QueryFailed(f"Spark cannot run it: {str(exc).splitlines()[0]} — fix: "
                              "rewrite it with functions both DuckDB and Spark have, or build this product on "
                              "engine: duckdb") from exc
    return ";\n".join(out)


def _condense(exc: Exception) -> str:
    """Spark's error as one line: its error class and first sentence, without the JVM stack or positions in
    the translated SQL (which is not the file the user wrote)."""
    text = str(exc).strip()
    getter = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)
    condition = getter() if callable(getter) else None
    head = re.sub(r"\.?\s*SQLSTATE: \w+.*$|;? line \d+ pos \d+\.?$", "", text.split("\n")[0].strip())
    if condition and condition not in head:
        head = f"[{condition}] {head}"
    return head[:500]


def _failure(exc: Exception) -> QueryFailed:
    return QueryFailed(f"Spark cannot run it (translated from DuckDB SQL): {_condense(exc)}", detail=str(exc))


def _quiet_python_loggers() -> None:
    """pyspark logs every failed query with its JVM stack; trustmesh reports the error itself, in one line."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True


class SparkBuildSession:
    """One build's views on the process's Spark session; temporary views are dropped when it closes."""

    def __init__(self, engine: SparkEngine) -> None:
        self.engine = engine
        self.spark = engine.spark()
        self._views: set[str] = set()
        self._reader = DuckDBSession(engine.allowed_directories)  # DuckDB's readers, for sources
        self.token_purposes = {}  # person_token exists from the start, so SQL using it type-checks

    @property
    def token_purposes(self) -> dict[str, str]:
        return self._purposes

    @token_purposes.setter
    def token_purposes(self, purposes: dict[str, str]) -> None:
        """Register `person_token` with the keys of exactly these purposes (the product being built)."""
        self._purposes = dict(purposes)
        keys = {name: self.engine.token_key(key_id) for name, key_id in purposes.items()} if self.engine.token_key else {}

        def person_token(purpose: str | None, value: str | None) -> str | None:
            if purpose not in keys:
                raise ValueError(f"person_token: {purpose!r} is not a linkage purpose of this product's domain")
            return None if value is None else _token(keys[purpose], value)

        self.spark.udf.register("person_token", person_token, "string")

    def _sql(self, sql: str) -> Any:
        translated = to_spark_sql(sql)
        try:
            return self.spark.sql(translated)
        except Exception as exc:
            raise _failure(exc) from exc

    def _collect(self, frame: Any) -> list[Any]:
        try:
            return list(frame.collect())
        except Exception as exc:
            raise _failure(exc) from exc

    def _view(self, view: str, frame: Any) -> None:
        frame.createOrReplaceTempView(view)
        self._views.add(view)

    def bind_file(self, view: str, path: str | list[str], fmt: str, options: dict[str, Any], *,
                  same_as: str | list[str] | None = None) -> None:
        """Read the source with DuckDB's reader into Parquet once (keyed by content), then bind that."""
        self.bind_parquet(view, [self.engine.stage_source(self._reader, path, fmt, options, same_as)])

    def bind_parquet(self, view: str, files: list[str], columns: list[str] | None = None) -> None:
        from pyspark.sql import functions as F

        try:
            frame = self.spark.read.parquet(*files)
            if columns is not None:
                frame = frame.select(*[F.col(f"`{c}`") for c in columns]) if columns else \
                    frame.select(F.lit(None).alias("no_column_granted"))
        except Exception as exc:
            raise _failure(exc) from exc
        self._view(view, frame)

    def bind_empty(self, view: str, columns: list[ColumnType]) -> None:
        cols = ", ".join(f"CAST(NULL AS {c.type}) AS {duckdb_quote(c.name)}" for c in columns)
        self._view(view, self._sql(f"SELECT {cols} WHERE false"))

    def bind_arrow(self, view: str, table: Any) -> None:
        self._view(view, self.spark.createDataFrame(table))

    def syntax_error(self, sql: str) -> tuple[str, int | None] | None:
        """Parses as DuckDB SQL and translates to Spark SQL, or says where and why not."""
        try:
            sqlglot.parse(sql, read="duckdb")
        except ParseError as exc:
            line = exc.errors[0].get("line") if exc.errors else None
            return str(exc).splitlines()[0], line
        try:
            to_spark_sql(sql)
        except QueryFailed as exc:
            return str(exc), None
        return None

    def describe(self, sql: str) -> list[ColumnType]:
        frame = self._sql(sql)  # analysed, not run
        return [ColumnType(f.name, _duckdb_type(f.dataType)) for f in frame.schema.fields]

    def materialize(self, table: str, sql: str) -> int:
        frame = self._sql(sql).cache()
        self._view(table, frame)
        try:
            return int(frame.count())
        except Exception as exc:
            raise _failure(exc) from exc

    def drop_view(self, view: str) -> None:
        self.spark.catalog.dropTempView(view)
        self._views.discard(view)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._collect(self._sql(sql))]

    def write_parquet(self, sql: str, path: str) -> None:
        """The result as a folder of Parquet part files at `path` (a candidate, published as a whole)."""
        frame = self._sql(sql)
        try:
            frame.write.mode("overwrite").parquet(path)
        except Exception as exc:
            raise _failure(exc) from exc

    def check_read(self, sql: str, relations: set[str], rules: ReadRules) -> None:
        """sqlglot's reading of the text Spark will be given: one read over `relations`, nothing refused."""
        check_tree(sql, relations, rules)

    def close(self) -> None:
        for view in list(self._views):
            self.spark.catalog.dropTempView(view)
        self._views.clear()
        self._reader.close()


class SparkEngine:
    """Spark through pyspark; one Spark session per process, shared by every build in it.

    `master`: local[*] by default (every core of this machine), or a cluster's URL (spark://, yarn, k8s://).
    `conf`: extra Spark settings from mesh.yaml, applied over trustmesh's defaults.
    """

    name = "spark"
    capabilities = Capabilities(
        dialect="duckdb",  # the dialect it accepts: translated to Spark SQL inside the engine
        describe_without_running=True,
        reads_formats=("csv", "parquet", "json"),
        writes_parquet=True,
    )

    def __init__(self, allowed_directories: list[str] | None = None,
                 token_key: Callable[[str], bytes] | None = None, *, master: str = "local[*]",
                 conf: dict[str, str] | None = None) -> None:
        self.allowed_directories = allowed_directories
        self.token_key = token_key
        self.master = master
        self.conf = {**DEFAULT_CONF, **(conf or {}), **LOCKED_CONF}
        scratch = (allowed_directories[-1] if allowed_directories else os.getcwd()).rstrip("/")
        self.scratch = Path(scratch) / "tmp" / "spark"

    def spark(self) -> Any:
        """The process's Spark session, started on first use (about ten seconds in local mode)."""
        import warnings

        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:
            from trustmesh.errors import UsageError

            raise UsageError("the spark engine needs pyspark — fix: pip install 'trustmesh[spark]' (and Java 17+), "
                             "or set engine: duckdb") from exc
        with _SPARK_LOCK:
            active = SparkSession.getActiveSession()
            if active is not None:
                return active
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # UDFs run in this interpreter's packages
            os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
            if self.master.startswith("local"):
                os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode listens on loopback only
            self.scratch.mkdir(parents=True, exist_ok=True)
            log_config = self.scratch / "log4j2.properties"  # Spark's own chatter off: errors reach us as errors
            log_config.write_text("rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n"
                                  "appender.console.type = Console\nappender.console.name = console\n"
                                  "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
                                  "appender.console.layout.pattern = spark: %p %c{1}: %m%n\n")
            conf = {"spark.local.dir": str(self.scratch / "local"), "spark.sql.warehouse.dir": str(self.scratch / "sql"),
                    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log_config.as_uri()}", **self.conf}
            builder = SparkSession.builder.master(self.master).appName("trustmesh")
            for key, value in conf.items():
                builder = builder.config(key, value)
            try:
                session = builder.getOrCreate()
            except Exception as exc:
                from trustmesh.errors import UsageError

                raise UsageError(f"cannot start Spark at {self.master}: {_condense(exc)} — fix: install Java 17+ "
                                 "(JAVA_HOME), or correct platform.spark.master in mesh.yaml") from exc
            session.sparkContext.setLogLevel("ERROR")
            _quiet_python_loggers()
            return session

    def session(self, reach: Reach | None = None, *, tokens: bool = True) -> SparkBuildSession:
        """A build's views on the shared Spark session. Spark cannot confine a session to files, so a product's
        reach holds by what its SQL may name (views only: no file paths, no refused function; each product's
        views are dropped before the next binds its own), checked by `check_read` before anything runs."""
        return SparkBuildSession(self)

    def stage_source(self, reader: DuckDBSession, path: str | list[str], fmt: str, options: dict[str, Any],
                     same_as: str | list[str] | None) -> str:
        """A source file read by DuckDB into Parquet under the scratch folder, once per content and options."""
        paths = [path] if isinstance(path, str) else list(path)
        digest = hashlib.sha256(json.dumps([fmt, options], sort_keys=True, default=str).encode())
        for p in paths:
            stat = os.stat(p)
            digest.update(f"{os.path.abspath(p)} {stat.st_size} {stat.st_mtime_ns}".encode())
        target = self.scratch / "sources" / f"{digest.hexdigest()[:32]}.parquet"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            view = f"stage_{digest.hexdigest()[:12]}"
            reader.bind_file(view, path, fmt, options, same_as=same_as)
            casts = [f"CAST({duckdb_quote(c.name)} AS {_PUBLISH_OVERRIDES[c.type.upper()]}) AS {duckdb_quote(c.name)}"
                     if c.type.upper() in _PUBLISH_OVERRIDES else duckdb_quote(c.name)
                     for c in reader.describe(f"SELECT * FROM {duckdb_quote(view)}")]
            staging = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
            reader.write_parquet(f"SELECT {', '.join(casts)} FROM {duckdb_quote(view)}", str(staging))
            reader.drop_view(view)
            os.replace(staging, target)
        return str(target)

    def quote(self, identifier: str) -> str:
        return duckdb_quote(identifier)

    def logical_type(self, engine_type: str) -> str:
        return logical_type(engine_type)  # types come back under their DuckDB names

    def publish_type(self, engine_type: str, physical_type: str | None) -> str | None:
        return publish_type(engine_type, physical_type)
