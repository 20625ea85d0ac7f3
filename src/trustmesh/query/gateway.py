"""Governed queries: what a principal may read, and nothing more, on a locked-down DuckDB connection.

For each dataset a query names, the gateway asks the authorizer which columns the principal may read
in the clear, masked or not at all, and defines a relation over that version's data files with
exactly those columns — masked ones already replaced by their masked expression, rows already
filtered. The consumer's SQL is rewritten to read those relations, checked again by DuckDB's own
parser, and run on a connection that can open only those files, with its configuration locked, in a
worker process whose memory the operating system caps (`trustmesh.query.sandbox`), with a timeout and a
cap on the result's rows and bytes. A server process runs only so many queries at once, and one principal
only a few of them (`trustmesh.query.running`). Every query, run or refused, is an audit entry, with
the whole SQL it was sent.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import select

from trustmesh.access.model import DatasetInfo, Directory, Principal
from trustmesh.access.policy import Decision, GrantTerms
from trustmesh.access.views import PolicyRelation as Relation
from trustmesh.access.views import apply_policy
from trustmesh.access.views import select as policy_select
from trustmesh.access.workflow import AccessService
from trustmesh.catalog import Catalog
from trustmesh.engines.duckdb import literal, quote
from trustmesh.errors import NotFound, TrustmeshError, UsageError
from trustmesh.metastore import audit
from trustmesh.metastore.schema import ProductStatusRow
from trustmesh.privacy.keys import KeyStore
from trustmesh.query import sandbox
from trustmesh.query.guard import (
    INTERNAL_PREFIX,
    MAX_SQL_CHARS,
    QueryRefused,
    parse,
    restrict_to_aggregates,
    rewrite,
    verify,
)
from trustmesh.query.running import RUNNING
from trustmesh.query.sandbox import ResultTooLarge, WorkerConnection, WorkerLost

# The audit keeps the whole SQL of any query that could run (longer ones are refused before parsing), and
# of a longer one its first and last EXCERPT characters; always its length and SHA-256.
MAX_AUDITED_SQL = MAX_SQL_CHARS
EXCERPT = 2_000
BATCH_ROWS = 2_048  # one DuckDB vector: the result's bytes are counted at this grain
KEYED = f"{INTERNAL_PREFIX}_keyed"  # the keyed-hash function of query connections: keys stay in Python


@dataclass(frozen=True)
class Limits:
    """What one query may use, and how many may run at once in one server process.

    A query's worker process is capped at `memory` (DuckDB's own limit; past it DuckDB spills to disk)
    plus `max_result_bytes` plus a fixed overhead (`sandbox.OVERHEAD`), so a server process holds at most
    `max_running` times that for queries. k-anonymity runs under `timeout_s` and `memory` too, on at most
    `kanon_max_rows` rows and `kanon_max_quasi` quasi-identifiers.
    """

    timeout_s: float = 30.0
    memory: str = "1GB"
    threads: int = 2
    default_rows: int = 10_000
    max_rows: int = 1_000_000
    max_result_bytes: int = 64 * 2**20
    max_running: int = 8  # per server process
    max_running_per_principal: int = 4  # per server process
    queue_s: float = 10.0  # how long a query waits for a place when all max_running are taken
    kanon_max_rows: int = 10_000_000
    kanon_max_quasi: int = 12

    def __post_init__(self) -> None:
        memory_bytes(self.memory)
        counts = {"threads": self.threads, "default_rows": self.default_rows, "max_rows": self.max_rows,
                  "max_result_bytes": self.max_result_bytes, "max_running": self.max_running,
                  "max_running_per_principal": self.max_running_per_principal,
                  "kanon_max_rows": self.kanon_max_rows, "kanon_max_quasi": self.kanon_max_quasi}
        wrong = [f"{name} {value!r}" for name, value in counts.items()
                 if isinstance(value, bool) or not isinstance(value, int) or value < 1]
        wrong += [f"{name} {value!r}" for name, value in (("timeout_s", self.timeout_s), ("queue_s", self.queue_s))
                  if isinstance(value, bool) or not isinstance(value, int | float) or value < 0]
        if wrong:
            raise UsageError(f"query limits {', '.join(wrong)} — fix: whole numbers of at least 1, and seconds of "
                             "0 or more")

    @property
    def worker_memory(self) -> int:
        """The cap, in bytes, on the worker process that runs one query."""
        return memory_bytes(self.memory) + self.max_result_bytes + sandbox.OVERHEAD


@dataclass
class QueryResult:
    """Rows (as Arrow) and what the gateway did to produce them."""

    table: Any
    query_id: str
    principal: str
    datasets: dict[str, int]
    masked: dict[str, dict[str, str]]
    withheld: list[str]
    row_filters: dict[str, str]
    truncated: bool
    duration_s: float
    warnings: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {"query_id": self.query_id, "principal": self.principal, "datasets": self.datasets,
                "warnings": self.warnings,
                "masked": self.masked, "withheld": self.withheld, "row_filters": self.row_filters,
                "rows": self.table.num_rows, "truncated": self.truncated, "duration_s": round(self.duration_s, 4),
                "columns": [{"name": f.name, "type": str(f.type)} for f in self.table.schema]}


class QueryTimeout(TrustmeshError, TimeoutError):
    http_status = 408


class QueryTooLarge(TrustmeshError):
    """The query needed more memory than its cap, or its result more bytes than the result cap."""

    http_status = 413


class Gateway:
    """The one way a consumer reads data: `run(principal, sql)`."""

    def __init__(self, catalog: Catalog, access: AccessService, keys: KeyStore, scratch: Path,
                 limits: Limits | None = None) -> None:
        self.catalog = catalog
        self.access = access
        self.keys = keys
        self.scratch = scratch
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._decisions: dict[Any, tuple[Directory, datetime, Decision]] = {}
        self._schemas: dict[tuple[str, ...], dict[str, str]] = {}

    def run(self, principal_id: str, sql: str, *, limit: int | None = None) -> QueryResult:
        """Run one read query as `principal_id`; refused queries raise and are audited with the reason."""
        started = time.perf_counter()
        query_id = uuid.uuid4().hex[:12]
        relations: list[Relation] = []
        try:
            with self.place(principal_id):
                try:
                    result = self._run(principal_id, sql, limit, query_id, relations, started)
                except TrustmeshError:
                    raise
                except Exception as exc:  # anything unforeseen refuses the query (fail closed), and is audited
                    raise QueryRefused(f"the query could not be checked, so it was not run ({type(exc).__name__})"
                                       ) from exc
        except TrustmeshError as exc:
            self._audit("query.refused", principal_id, relations, {
                "query": query_id, **audited_sql(sql), "reason": str(exc),
                "datasets": {r.address: r.version for r in relations}})
            raise
        self._audit("query.run", principal_id, relations, {
            "query": query_id, **audited_sql(sql), "datasets": result.datasets,
            "masked": {k: v["strategy"] for k, v in result.masked.items()}, "withheld": result.withheld,
            "row_filters": result.row_filters, "rows": result.table.num_rows, "bytes": result.table.nbytes,
            "truncated": result.truncated, "duration_ms": round(result.duration_s * 1000, 1)})
        return result

    def place(self, principal_id: str) -> AbstractContextManager[None]:
        """One of this process's places for a running query, held while the block runs; refused (429) past
        the principal's share or when none frees up in time. k-anonymity work holds one too."""
        return RUNNING.place(principal_id, per_principal=self.limits.max_running_per_principal,
                             total=self.limits.max_running, wait_s=self.limits.queue_s)

    def _audit(self, kind: str, principal: str, relations: list[Relation], details: dict[str, Any]) -> None:
        subject = ",".join(sorted({r.address for r in relations}))[:600] or "query"
        with self.catalog.store.session() as session:
            audit.append(session, kind, principal, subject, details, at=self.access.clock())

    def _run(self, principal_id: str, sql: str, limit: int | None, query_id: str, relations: list[Relation],
             started: float) -> QueryResult:
        rows = self.limits.default_rows if limit is None else limit
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1 or rows > self.limits.max_rows:
            raise QueryRefused(f"--limit {limit!r}: from 1 to {self.limits.max_rows:,} rows")
        sandbox.pool(self.limits.worker_memory).warm()
        directory = self.access.directory()
        principal = self.access.principal(principal_id, directory)
        parsed = parse(sql, set(directory.mesh.products))
        grants = self.access.active_grants(principal.id)
        now = self.access.clock()
        views: dict[int, str] = {}
        for i, ref in enumerate(parsed.refs):
            ds = directory.datasets.get(ref.address)
            if ds is None:
                raise QueryRefused(f"no dataset {ref.address} in this mesh — fix: check the address "
                                   "(`trustmesh catalog list`)")
            mine = [g for g in grants if g.dataset == ds.address]
            decision = self._decide(directory, principal, ds, mine, now)
            if not decision.allowed:
                raise QueryRefused(f"{decision.reason} — fix: `trustmesh access request {ds.address} --purpose ... "
                                   "--purpose-category ... --days N`")
            try:
                version, files = self.catalog.version_files(ds.address, ref.version)
            except NotFound as exc:
                raise QueryRefused(str(exc)) from exc
            relation = Relation(ds.address, version, files, f"{INTERNAL_PREFIX}_{query_id}_{i}",
                                policies=decision.policies)
            relations.append(relation)
            views[id(ref.node)] = relation.view
            apply_policy(relation, ds, decision, principal, directory, mine, now)
            if relation.aggregate_only is not None:
                restrict_to_aggregates(parsed, ref, *relation.aggregate_only)
        con = self._connection([f for r in relations for f in r.files], query_id)
        timer = threading.Timer(self.limits.timeout_s, con.interrupt)
        try:
            for relation in relations:
                self._define(con, relation, directory.datasets[relation.address])
            con.execute("SET lock_configuration = true")
            final = rewrite(parsed, views)
            verify(con, final, {r.view for r in relations}, parsed.ctes)
            timer.start()
            table, truncated = self._fetch(con, final, rows, relations)
        finally:
            timer.cancel()
            # Freeing a big query's memory takes a while; the caller need not wait for it.
            threading.Thread(target=con.close, name="trustmesh-query-close", daemon=True).start()
        warnings = self._unfit({directory.datasets[r.address].product for r in relations})
        masked = {f"{r.address}.{c}": m.to_dict() for r in relations for c, m in r.masked.items()}
        masked |= {f"{r.address}.{c}": {**m.to_dict(), "how": m.describe() + ", except on the rows of a grant that "
                   "unmasks it"} for r in relations for c, m in r.partly_masked.items()}
        return QueryResult(table, query_id, principal.id, {r.address: r.version for r in relations}, masked,
                           [f"{r.address}.{c}" for r in relations for c in r.withheld],
                           {r.address: r.row_filter for r in relations if r.row_filter}, truncated,
                           time.perf_counter() - started, warnings)

    def _unfit(self, products: set[str]) -> list[str]:
        """A warning for each product governance last found unfit for consumption (its data is still read)."""
        if not products:
            return []
        with self.catalog.store.session() as session:
            rows = session.scalars(select(ProductStatusRow).where(ProductStatusRow.product.in_(sorted(products)),
                                                                  ProductStatusRow.status == "unfit for consumption"))
            return [f"{r.product} is unfit for consumption: {'; '.join(r.reasons[:2])}" for r in rows]

    def _decide(self, directory: Directory, principal: Principal, ds: DatasetInfo, grants: list[GrantTerms],
                now: datetime) -> Decision:
        """The authorizer's per-column decision, remembered while the directory and these grants are unchanged
        and none of them has expired (a grant's expiry is the only way time changes a decision)."""
        key = (id(directory), principal.id, ds.address, tuple(sorted(grants, key=lambda g: g.id)))
        with self._lock:
            cached = self._decisions.get(key)
        if cached is not None and cached[0] is directory and now < cached[1]:
            return cached[2]
        authorizer = self.access.authorizer(principal.id, directory, grants)
        decision = authorizer.explain(principal, ds, now)
        until = min((g.expires_at for g in grants), default=datetime.max.replace(tzinfo=UTC))
        with self._lock:
            if len(self._decisions) > 10_000:
                self._decisions.clear()
            self._decisions[key] = (directory, until, decision)
        return decision

    def _fresh(self) -> WorkerConnection:
        """A new in-memory database with the gateway's limits, in a worker process of its own (one started
        ahead of need, when the pool has one); no file access is granted yet."""
        limits = self.limits
        settings = [f"SET memory_limit = {literal(limits.memory)}", f"SET threads = {int(limits.threads)}",
                    "SET autoinstall_known_extensions = false", "SET autoload_known_extensions = false",
                    "SET enable_progress_bar = false"]
        return sandbox.pool(limits.worker_memory).connect(
            settings, self.keys.key, KEYED, max_message=limits.max_result_bytes + 32 * 2**20,
            call_timeout_s=limits.timeout_s)

    def _connection(self, files: list[str], query_id: str) -> Any:
        """A database used by this query alone, narrowed to the query's own files before anything of the
        query runs. (A worker's connection answers the DuckDB calls the gateway makes, hence `Any`.)"""
        con = self._fresh()
        tmp = self.scratch / query_id
        con.execute(f"SET temp_directory = {literal(str(tmp))}")
        con.execute(f"SET allowed_directories = {literal([str(tmp) + '/'])}")
        con.execute(f"SET allowed_paths = {literal(sorted(set(files)))}")
        con.execute("SET enable_external_access = false")
        return con

    def _define(self, con: duckdb.DuckDBPyConnection, relation: Relation, ds: DatasetInfo) -> None:
        known = tuple(relation.files)
        types = self._schemas.get(known)  # a version's files never change, nor their schema
        if types is None:
            source = f"read_parquet({literal(relation.files)})"
            types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
            with self._lock:
                self._schemas[known] = types
        con.execute(f"CREATE TEMP VIEW {quote(relation.view)} AS {policy_select(relation, ds, types, self.keys.key, KEYED)}")

    def _fetch(self, con: WorkerConnection, sql: str, rows: int, relations: list[Relation]) -> tuple[Any, bool]:
        """Up to `rows` rows (one more says the result was truncated), counted in bytes as they stream in."""
        limits = self.limits
        try:
            table = con.fetch(sql, batch_rows=BATCH_ROWS, max_rows=rows + 1, max_bytes=limits.max_result_bytes)
        except ResultTooLarge as exc:
            raise QueryTooLarge(f"the result is larger than {_size(limits.max_result_bytes)} (the cap on one "
                                f"query's result; it passed it by row {exc.rows:,}) and was stopped — fix: select "
                                "fewer or narrower columns, aggregate, or ask for fewer rows (--limit)") from exc
        except duckdb.InterruptException as exc:
            raise QueryTimeout(f"the query ran longer than {limits.timeout_s:g} s and was stopped — fix: "
                               "filter or aggregate more, or ask for fewer rows") from exc
        except duckdb.OutOfMemoryException as exc:
            raise QueryTooLarge(f"the query needed more memory than the {limits.memory} one query may use, and "
                                "was stopped — fix: filter or aggregate more, or select fewer or narrower columns "
                                "or values") from exc
        except duckdb.Error as exc:
            raise QueryRefused(_explain_failure(str(exc), relations)) from exc
        except WorkerLost as exc:
            raise QueryRefused(f"the query did not finish: {exc}") from exc
        truncated = table.num_rows > rows
        return (table.slice(0, rows) if truncated else table), truncated


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def memory_bytes(text: str) -> int:
    """A memory size as DuckDB reads it ("1GB" is 10^9 bytes, "1GiB" 2^30), in bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", text) if isinstance(text, str) else None
    if match is None or match.group(2).lower() not in _UNITS or float(match.group(1)) <= 0:
        raise UsageError(f"query memory {text!r} — fix: a size such as 1GB, 512MB or 2GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _size(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:g} MiB"


def audited_sql(sql: str) -> dict[str, Any]:
    """The SQL as a query's audit entry keeps it: whole, up to the longest query that may run, so padding
    (a long comment) cannot push the statement out of the record; past that (the query was refused unparsed)
    its first and last `EXCERPT` characters. Always with its length and SHA-256."""
    digest = hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest()
    kept = {"sql_chars": len(sql), "sql_sha256": digest}
    if len(sql) <= MAX_AUDITED_SQL:
        return {"sql": sql, **kept}
    cut = len(sql) - 2 * EXCERPT
    return {"sql": f"{sql[:EXCERPT]}\n-- [{cut:,} characters not kept] --\n{sql[-EXCERPT:]}", **kept, "sql_cut": True}


def _explain_failure(message: str, relations: list[Relation]) -> str:
    """DuckDB's error, with our internal relation names put back as the addresses the consumer wrote."""
    first = message.strip().splitlines()[0][:400]
    for r in relations:
        first = first.replace(r.view, r.address)
    withheld = [f"{r.address}.{c}" for r in relations for c in r.withheld if f'"{c}"' in message or f" {c}" in message]
    if withheld and ("not found" in message.lower() or "does not have a column" in message.lower()):
        return f"{first} — {', '.join(withheld)} is not granted to you (ask for it with `trustmesh access request`)"
    return f"the query failed: {first}"
