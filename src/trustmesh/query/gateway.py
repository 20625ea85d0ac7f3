"""Governed queries: what a principal may read, and nothing more, on a locked-down DuckDB connection.

For each dataset a query names, the gateway asks the authorizer which columns the principal may read
in the clear, masked or not at all, and defines a relation over that version's data files with
exactly those columns — masked ones already replaced by their masked expression, rows already
filtered. The consumer's SQL is rewritten to read those relations, checked again by DuckDB's own
parser, and run on a connection that can open only those files, with its configuration locked, a
memory limit and a timeout. Every query, run or refused, is an audit entry.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
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
from trustmesh.errors import NotFound, TrustmeshError
from trustmesh.metastore import audit
from trustmesh.metastore.schema import ProductStatusRow
from trustmesh.privacy.keys import KeyStore
from trustmesh.privacy.masking import register_keyed_functions
from trustmesh.query.guard import (
    INTERNAL_PREFIX,
    QueryRefused,
    parse,
    restrict_to_aggregates,
    rewrite,
    verify,
)

MAX_AUDITED_SQL = 10_000
KEYED = f"{INTERNAL_PREFIX}_keyed"  # the keyed-hash function of query connections: keys stay in Python


@dataclass(frozen=True)
class Limits:
    """What one query may use."""

    timeout_s: float = 30.0
    memory: str = "2GB"
    threads: int = 2
    default_rows: int = 10_000
    max_rows: int = 1_000_000


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
        self._spare: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._refilling = threading.Event()

    def run(self, principal_id: str, sql: str, *, limit: int | None = None) -> QueryResult:
        """Run one read query as `principal_id`; refused queries raise and are audited with the reason."""
        started = time.perf_counter()
        query_id = uuid.uuid4().hex[:12]
        relations: list[Relation] = []
        try:
            try:
                result = self._run(principal_id, sql, limit, query_id, relations, started)
            except TrustmeshError:
                raise
            except Exception as exc:  # anything unforeseen refuses the query (fail closed), and is audited
                raise QueryRefused(f"the query could not be checked, so it was not run ({type(exc).__name__})") from exc
        except TrustmeshError as exc:
            self._audit("query.refused", principal_id, relations, {
                "query": query_id, "sql": sql[:MAX_AUDITED_SQL], "reason": str(exc),
                "datasets": {r.address: r.version for r in relations}})
            raise
        self._audit("query.run", principal_id, relations, {
            "query": query_id, "sql": sql[:MAX_AUDITED_SQL], "datasets": result.datasets,
            "masked": {k: v["strategy"] for k, v in result.masked.items()}, "withheld": result.withheld,
            "row_filters": result.row_filters, "rows": result.table.num_rows, "truncated": result.truncated,
            "duration_ms": round(result.duration_s * 1000, 1)})
        return result

    def _audit(self, kind: str, principal: str, relations: list[Relation], details: dict[str, Any]) -> None:
        subject = ",".join(sorted({r.address for r in relations}))[:600] or "query"
        with self.catalog.store.session() as session:
            audit.append(session, kind, principal, subject, details, at=self.access.clock())

    def _run(self, principal_id: str, sql: str, limit: int | None, query_id: str, relations: list[Relation],
             started: float) -> QueryResult:
        rows = self.limits.default_rows if limit is None else limit
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1 or rows > self.limits.max_rows:
            raise QueryRefused(f"--limit {limit!r}: from 1 to {self.limits.max_rows:,} rows")
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

    def _fresh(self) -> duckdb.DuckDBPyConnection:
        """A new in-memory database with the gateway's limits; no file access is granted yet."""
        con = duckdb.connect(":memory:")
        con.execute(f"SET memory_limit = {literal(self.limits.memory)}")
        con.execute(f"SET threads = {int(self.limits.threads)}")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        register_keyed_functions(con, self.keys.key, KEYED)
        return con

    def _refill(self) -> None:
        try:
            self._spare.put(self._fresh())
        finally:
            self._refilling.clear()

    def _connection(self, files: list[str], query_id: str) -> duckdb.DuckDBPyConnection:
        """A database used by this query alone: one prepared in the background (opening one costs ~10 ms),
        narrowed to the query's own files before anything of the query runs."""
        try:
            con = self._spare.get_nowait()
        except queue.Empty:
            con = self._fresh()
        if not self._refilling.is_set():
            self._refilling.set()
            threading.Thread(target=self._refill, name="trustmesh-query-spare", daemon=True).start()
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

    def _fetch(self, con: duckdb.DuckDBPyConnection, sql: str, rows: int,
               relations: list[Relation]) -> tuple[Any, bool]:
        import pyarrow as pa

        try:
            reader = con.sql(sql).to_arrow_reader(min(rows + 1, 100_000))
            batches, count = [], 0
            for batch in reader:
                batches.append(batch)
                count += batch.num_rows
                if count > rows:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema)
        except duckdb.InterruptException as exc:
            raise QueryTimeout(f"the query ran longer than {self.limits.timeout_s:g} s and was stopped — fix: "
                               "filter or aggregate more, or ask for fewer rows") from exc
        except duckdb.Error as exc:
            raise QueryRefused(_explain_failure(str(exc), relations)) from exc
        truncated = table.num_rows > rows
        return (table.slice(0, rows) if truncated else table), truncated


def _explain_failure(message: str, relations: list[Relation]) -> str:
    """DuckDB's error, with our internal relation names put back as the addresses the consumer wrote."""
    first = message.strip().splitlines()[0][:400]
    for r in relations:
        first = first.replace(r.view, r.address)
    withheld = [f"{r.address}.{c}" for r in relations for c in r.withheld if f'"{c}"' in message or f" {c}" in message]
    if withheld and ("not found" in message.lower() or "does not have a column" in message.lower()):
        return f"{first} — {', '.join(withheld)} is not granted to you (ask for it with `trustmesh access request`)"
    return f"the query failed: {first}"
