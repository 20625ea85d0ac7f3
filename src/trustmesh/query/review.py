"""Privacy review of served data: find undeclared personal data, measure k-anonymity.

A scan or a k-anonymity check of a dataset reads its published files directly (not through the gateway's
masking), so it is for the dataset's domain's custodians (data owner, data domain steward, data product owner)
and governance admins, and each run is an audit entry. k-anonymity of a governed query's result is anyone's:
the query runs through the gateway as the caller, masked as their grants say, and is audited there.

k-anonymity runs under the gateway's limits: a place among the process's running queries, its timeout and
memory, and at most `kanon_max_rows` rows over `kanon_max_quasi` quasi-identifiers (`privacy.kanon.Budget`).

`trustmesh scan`, `trustmesh privacy kanon` and `POST /api/v1/privacy/…` all call `PrivacyReview`.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from trustmesh.access.model import CUSTODIAN_ROLES, PERSON, Principal
from trustmesh.access.workflow import AccessService
from trustmesh.catalog import Catalog
from trustmesh.engines.duckdb import literal
from trustmesh.errors import Forbidden, UsageError
from trustmesh.metastore import audit
from trustmesh.privacy.kanon import DEFAULT_K, SMALLEST, Budget, bounded, k_anonymity, suggest_generalisation
from trustmesh.privacy.scan import DEFAULT_SAMPLE, ScanReport, parquet_relation, record_findings, scan_files

if TYPE_CHECKING:
    from trustmesh.query.gateway import Gateway

SCAN, KANON = "scan", "measure the k-anonymity of"


@dataclass(frozen=True)
class ScanResult:
    """What a scan of one version found, and how many findings it recorded (None: it recorded none)."""

    dataset: str
    version: int
    served_version: int | None
    contract: str | None  # the contract file the declarations came from (None: the catalog's copy)
    report: ScanReport
    recorded: int | None

    @property
    def ok(self) -> bool:
        return not self.report.undeclared

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "version": self.version, "served_version": self.served_version,
                "contract": self.contract, **self.report.to_dict(), "recorded": self.recorded, "ok": self.ok}


@dataclass(frozen=True)
class KanonResult:
    """k-anonymity of a dataset version or of a query's result, and the generalisation that would reach k."""

    label: str  # `<address> v<N>` or `query <id>`, for people
    source: dict[str, Any]  # {"dataset", "version"} or {"sql", "query_id", "datasets", "masked", "truncated"}
    report: dict[str, Any]  # as `k_anonymity` returns it
    suggestion: dict[str, Any]  # as `suggest_generalisation` returns it; {} with a weight

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, **self.report, "suggestion": self.suggestion}


class PrivacyReview:
    """Scans and k-anonymity over one catalog, with the access rules above."""

    def __init__(self, catalog: Catalog, access: AccessService, gateway: Callable[[], Gateway]) -> None:
        self.catalog = catalog
        self.access = access
        self._gateway = gateway

    def custodian(self, actor: str, address: str, domain: str, what: str) -> Principal:
        """The acting person, when they are a custodian of the dataset's domain or a governance admin."""
        who = self.access.principal(actor)
        if who.kind == PERSON and (domain in who.custodian_of() or who.has_role("governance-admin")):
            return who
        owners = self.catalog.owners(domain)
        names = sorted({p["id"] for role in CUSTODIAN_ROLES for p in owners.get(role, [])})
        raise Forbidden(
            f"{actor} may not {what} {address}: it reads the published data directly, so only the {domain} domain's "
            f"custodians ({', '.join(CUSTODIAN_ROLES)}) and governance admins may — fix: ask "
            f"{', '.join(names) or 'a governance admin'} to run it"
            + (", or measure your own governed query (`trustmesh privacy kanon --sql 'SELECT ...'`)"
               if what == KANON else ""))

    def _declarations(self, address: str, info: dict[str, Any]) -> tuple[dict[str, str | None], set[str], str | None]:
        """piiType per column, the key columns, and the contract file: from the repo's contract (what the query
        gateway masks by), else from the catalog when the dataset has left the repo."""
        output = self.access.directory().mesh.datasets.get(address)
        if output is not None and output.contract is not None:
            cols = output.contract.columns
            return ({c.name: c.pii_type for c in cols}, {c.name for c in cols if c.primary_key or c.unique},
                    output.contract.file)
        cols_info = info["columns"]
        return ({c["name"]: c["pii_type"] for c in cols_info},
                {c["name"] for c in cols_info if c["primary_key"] or c["unique"]}, None)

    def scan(self, actor: str, address: str, *, sample: int = DEFAULT_SAMPLE, version: int | None = None,
             record: bool = False) -> ScanResult:
        """Scan a sample of a version (default: the served one) for personal data its contract does not declare.

        With `record`, each undeclared detection becomes an `undeclared-pii` finding on the served version
        (replacing the last scan's); the findings and the audit entry are one transaction.
        """
        info = self.catalog.show(address)
        address = info["address"]
        self.custodian(actor, address, info["domain"], SCAN)
        if record and version is not None and version != info["version"]:
            raise UsageError(f"record stores findings on the served version of {address} (v{info['version']}), not "
                             f"v{version} — fix: leave the version out to record, or do not record to only look at "
                             f"v{version}")
        number, files = self.catalog.version_files(address, version)
        declared, keys, contract_file = self._declarations(address, info)
        report = scan_files(files, declared=declared, keys=keys, sample=sample)
        recorded = None
        now = self.access.clock()
        with self.catalog.store.session() as session:
            if record:
                recorded = len(record_findings(session, address, number, report, contract_file=contract_file, now=now))
            audit.append(session, "privacy.scan", actor, address, {
                "version": number, "sampled": report.sampled, "undeclared": [c.column for c in report.undeclared],
                "recorded": recorded}, at=now)
        return ScanResult(address, number, info["version"], contract_file, report, recorded)

    def kanon(self, actor: str, quasi: list[str], *, dataset: str | None = None, sql: str | None = None,
              k: int = DEFAULT_K, version: int | None = None, max_suppression: float = 0.0,
              smallest: int = SMALLEST, weight: str | None = None) -> KanonResult:
        """k-anonymity over the quasi-identifiers of a dataset version (its custodians) or of a governed query's
        result (anyone, as themselves), with the generalisation that would reach k (none with a `weight`)."""
        if (dataset is None) == (sql is None):
            raise UsageError("name a dataset or give a query, not both or neither — fix: e.g. `trustmesh privacy "
                             "kanon ADDRESS --quasi ...` or `trustmesh privacy kanon --sql 'SELECT ...' --quasi ...`")
        if sql is not None and version is not None:
            raise UsageError(f"version {version} is for a dataset — fix: with a query, name a past version in the "
                             "SQL: `FROM dataset AT (VERSION => N)`")
        gateway = self._gateway()
        limits = gateway.limits
        Budget(max_quasi=limits.kanon_max_quasi).check_quasi(quasi)  # before any data is read
        if dataset is not None:
            info = self.catalog.show(dataset)
            address = info["address"]
            self.custodian(actor, address, info["domain"], KANON)
            number, files = self.catalog.version_files(address, version)
            relation = parquet_relation(files)
            source: dict[str, Any] = {"dataset": address, "version": number}
            with self.catalog.store.session() as session:
                audit.append(session, "privacy.kanon", actor, address, {"version": number, "quasi": quasi, "k": k},
                             at=self.access.clock())
            label, table = f"{address} v{number}", None
        else:
            assert sql is not None
            result = gateway.run(actor, sql, limit=limits.max_rows)  # audited, and bounded, as a query
            relation, table = "SELECT * FROM __tm_result", result.table
            source = {"sql": sql, "query_id": result.query_id, "datasets": result.datasets,
                      "masked": list(result.masked), "truncated": result.truncated}
            label = f"query {result.query_id}"
        tmp = gateway.scratch / f"kanon-{uuid.uuid4().hex[:12]}"
        with gateway.place(actor):
            con = duckdb.connect(":memory:")
            try:
                con.execute(f"SET memory_limit = {literal(limits.memory)}")
                con.execute(f"SET threads = {int(limits.threads)}")
                con.execute(f"SET temp_directory = {literal(str(tmp))}")
                if table is not None:
                    con.register("__tm_result", table)
                budget = Budget(limits.timeout_s, limits.kanon_max_rows, limits.kanon_max_quasi, limits.memory)
                with bounded(con, budget):
                    report = k_anonymity(con, relation, quasi, k, smallest=smallest, weight=weight, budget=budget)
                    suggestion = ({} if weight else suggest_generalisation(
                        con, relation, quasi, k, max_suppression=max_suppression, budget=budget))
            finally:
                con.close()
                shutil.rmtree(tmp, ignore_errors=True)
        return KanonResult(label, source, report, suggestion)
