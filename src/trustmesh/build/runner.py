"""Orchestrates a build: plan, validate, then per product land → transform → check → publish."""

from __future__ import annotations

import secrets
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlglot

from trustmesh.access.model import DatasetInfo, Directory
from trustmesh.access.policy import Authorizer, GrantTerms
from trustmesh.access.views import PolicyRelation, apply_policy
from trustmesh.access.views import select as policy_select
from trustmesh.access.workflow import AccessService
from trustmesh.build.events import RunEvents
from trustmesh.build.fingerprint import Fingerprint, fingerprint, is_current
from trustmesh.build.ingest import land_database, land_file, landing_fix
from trustmesh.build.publish import (
    Candidate,
    Publication,
    commit_snapshots,
    data_file_path,
    quarantine,
    record_publication,
    remove_data_file,
)
from trustmesh.contracts.compat import breaking_change_problems
from trustmesh.descriptors import InputPort, Mesh, OutputDataset, Product
from trustmesh.descriptors.sql import parse_product_sql
from trustmesh.engines import Engine, EngineSession, QueryFailed, Reach
from trustmesh.engines.duckdb import DuckDBSession, literal
from trustmesh.errors import BuildFailed, InvalidMesh, Problem
from trustmesh.lineage.extract import extract_lineage
from trustmesh.lineage.privacy import lineage_findings
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.iceberg import snapshot_files
from trustmesh.metastore.registry import register_domains
from trustmesh.metastore.schema import BuildRow, ProductBuildRow, utcnow
from trustmesh.plan import select, upstream_graph
from trustmesh.privacy.masking import register_keyed_functions
from trustmesh.quality import dataset_rules, run_quality
from trustmesh.sqlguard import INTERNAL_PREFIX, PRODUCT, QueryRefused
from trustmesh.validate import (
    check_mesh,
    compare_columns,
    file_argument,
    resolve_views,
    source_format,
    view_name,
)

KEYED = f"{INTERNAL_PREFIX}_keyed"  # the keyed hash of pseudonymised inputs: keys stay in Python


@dataclass
class BuildContext:
    """What a build needs: the loaded mesh, the metastore, the engine, and where data lives."""

    mesh: Mesh
    store: Metastore
    engine: Engine
    warehouse: Path
    catalog: Callable[[], Any]
    events: RunEvents | None = None
    access: AccessService | None = None  # None: no access control (a bare build context in tests of the engine)
    actor: str = "trustmesh"
    _authorizer: Authorizer | None = None
    blocked: dict[str, list[Problem]] = field(default_factory=dict)  # products a policy error keeps from publishing
    engines: Callable[[str], Engine] | None = None  # engines by name, for products that choose their own
    keys: Callable[[str], bytes] | None = None  # pseudonymisation keys, for inputs a grant masks that way
    _grants: dict[str, list[GrantTerms]] | None = None
    # Fingerprints (and what grants allow) found while deciding what changed, still true when the product
    # builds because nothing upstream of it builds first.
    _known: dict[str, tuple[Fingerprint, dict[str, InputAccess]]] = field(default_factory=dict)
    # Where a built product's session is closed and its scratch folder removed, off the build's own thread.
    _disposer: ThreadPoolExecutor | None = None

    def engine_for(self, product: Product) -> Engine:
        """The engine that builds `product`: its own choice (customProperties: engine), else the mesh's."""
        name = product.engine or self.engine.name
        if name == self.engine.name or self.engines is None:
            return self.engine
        return self.engines(name)

    def authorizer(self) -> Authorizer | None:
        """Decisions over the grants active when the build started (one Cedar entity graph per build)."""
        if self.access is not None and self._authorizer is None:
            self._authorizer = self.access.authorizer(directory=Directory.from_mesh(self.mesh))
        return self._authorizer

    def grants(self, principal: str) -> list[GrantTerms]:
        """The active grants of one principal (a product), as they stood when the build started."""
        if self._grants is None:
            self._grants = {}
            for grant in self.access.active_grants() if self.access else []:
                self._grants.setdefault(grant.principal, []).append(grant)
        return self._grants.get(principal, [])


@dataclass(frozen=True)
class InputAccess:
    """What a product may read of another domain's dataset: exactly what a person with the same grant reads
    through the gateway (columns withheld, masked as granted, rows filtered, aggregates only)."""

    address: str
    columns: list[str]
    withheld: dict[str, str]  # column → mask | deny
    policies: list[str]
    relation: PolicyRelation
    dataset: DatasetInfo


def input_access(ctx: BuildContext, product: Product) -> dict[str, InputAccess]:
    """A product reading another domain's output port is a consumer: it needs an active grant, like anyone.

    Its input is the policy relation the gateway would serve a person holding the same grant. Raises
    BuildFailed, naming the request to file, when there is no grant or the grant leaves nothing to read.
    """
    authorizer = ctx.authorizer()
    if authorizer is None:
        return {}
    directory = authorizer.directory
    principal = directory.principals[product.address]
    now = ctx.access.clock() if ctx.access else utcnow()
    found: dict[str, InputAccess] = {}
    for address in product.upstream_addresses:
        ds = directory.datasets.get(address)
        if ds is None or ds.domain == product.domain:
            continue
        decision = authorizer.explain(principal, ds, now)
        fix = (f"a {product.domain} data product owner asks: `trustmesh access request {address} --for "
               f"{product.address} --purpose '...' --purpose-category product-input --days 365`, and a "
               f"{ds.domain} steward approves it")
        if not decision.allowed:
            raise BuildFailed(product.address, f"no grant to read {address} of the {ds.domain} domain", [Problem(
                product.file, f"{product.address} reads {address} of another domain without an active grant: "
                f"{decision.reason}", fix=fix)])
        relation = PolicyRelation(address, 0, [], view_name(address), policies=decision.policies)
        try:
            apply_policy(relation, ds, decision, principal, directory, ctx.grants(product.address), now)
        except QueryRefused as exc:
            raise BuildFailed(product.address, f"nothing of {address} is readable", [Problem(
                product.file, f"{product.address} may read {address}, but {exc}", fix=fix)]) from exc
        clear = [c for c, v in decision.columns.items() if v == "allow"]
        withheld = {c: v for c, v in decision.columns.items() if v != "allow"}
        found[address] = InputAccess(address, clear, withheld, decision.policies, relation, ds)
    return found


@dataclass
class ProductResult:
    address: str
    status: str  # published | skipped | failed | blocked
    rows: int = 0
    duration_s: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)
    message: str = ""
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"product": self.address, "status": self.status, "rows": self.rows,
                "duration_s": round(self.duration_s, 3), "versions": self.versions, "message": self.message,
                "problems": [p.to_dict() for p in self.problems]}


@dataclass
class BuildResult:
    build_id: str
    products: list[ProductResult]
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.status in ("published", "skipped") for p in self.products)

    def to_dict(self) -> dict[str, Any]:
        return {"build_id": self.build_id, "ok": self.ok, "products": [p.to_dict() for p in self.products],
                "warnings": self.warnings}


class Progress(Protocol):
    def started(self, address: str, steps: int) -> None: ...
    def step(self, address: str, what: str) -> None: ...
    def finished(self, result: ProductResult) -> None: ...


class _Silent:
    def started(self, address: str, steps: int) -> None: ...
    def step(self, address: str, what: str) -> None: ...
    def finished(self, result: ProductResult) -> None: ...


def build(ctx: BuildContext, selector: str | None = None, *, full: bool = False,
          progress: Progress | None = None) -> BuildResult:
    """Build the selected products in dependency order; an invalid mesh publishes nothing.

    Products whose inputs, SQL and contracts are unchanged since their last build are skipped without
    being read or re-validated.
    """
    progress = progress or _Silent()
    order = select(ctx.mesh, selector)
    with ctx.store.session() as meta:
        changed = [a for a in order if full or not _current(ctx, meta, ctx.mesh.products[a])]
        problems = breaking_change_problems(meta, ctx.mesh, changed)
    graph = upstream_graph(ctx.mesh)
    for address in changed:  # a product whose upstream builds first sees new versions: its fingerprint changes
        if graph.get(address, set()) & set(changed):
            ctx._known.pop(address, None)
    problems += check_mesh(ctx.mesh, ctx.engine, changed)
    if any(p.severity == "error" for p in problems):
        raise InvalidMesh(problems, "nothing was built: the mesh is not valid")
    return _run(ctx, order, selector, full, progress)


def _dispose(session: EngineSession | None, scratch: Path) -> None:
    """Close a product's session, then remove its scratch folder (the database's spill files are in it)."""
    try:
        if session is not None:
            session.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(ctx: BuildContext, order: list[str], selector: str | None, full: bool, progress: Progress) -> BuildResult:
    """Build products one after another on the engine, while a publisher thread commits finished ones.

    Publishing (Iceberg snapshots, the metastore transaction) overlaps the next product's SQL; a product
    waits only for the publication of products it reads.
    """
    build_id = f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    with ctx.store.session() as meta:
        meta.add(BuildRow(id=build_id, started_at=utcnow(), status="running", selector=selector or "", full=full))
        register_domains(meta, ctx.mesh)  # people and roles as the repo declares them now
    graph = upstream_graph(ctx.mesh)
    outcomes: dict[str, Future[ProductResult]] = {}

    def finish(outcome: Future[ProductResult]) -> None:
        if outcome.exception() is None:
            result = outcome.result()
            if result.status in ("failed", "blocked"):
                _record_failure(ctx.store, build_id, result)
            progress.finished(result)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trustmesh-publish") as publisher, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="trustmesh-dispose") as ctx._disposer:
        for address in order:
            product = ctx.mesh.products[address]
            progress.started(address, 2 + len(product.inputs) + 2 * len(product.outputs))
            upstream = sorted(graph.get(address, set()) & set(outcomes))
            bad = [u for u in upstream if outcomes[u].result().status in ("failed", "blocked")]
            if bad:
                outcome = _done(ProductResult(address, "blocked", message=f"upstream {', '.join(bad)} failed; "
                                              "the previous version stays served"))
            else:
                outcome = _build_product(ctx, product, build_id, full, progress, publisher)
            outcome.add_done_callback(finish)
            outcomes[address] = outcome
        results = [outcomes[a].result() for a in order]
    ctx._disposer = None  # every session is closed and every scratch folder gone by now
    with ctx.store.session() as meta:
        row = meta.get(BuildRow, build_id)
        assert row is not None
        row.finished_at = utcnow()
        row.status = "succeeded" if all(r.status in ("published", "skipped") for r in results) else "failed"
        counts: dict[str, list[str]] = {}
        for r in results:
            counts.setdefault(r.status, []).append(r.address)
        audit.append(meta, "build.finished", ctx.actor, selector or "mesh", {
            "build": build_id, "status": row.status, "full": full, **counts,
            "failures": {r.address: r.message for r in results if r.status in ("failed", "blocked")}},
            at=row.finished_at)
    if ctx.events:
        ctx.events.wait()
    return BuildResult(build_id, results, list(ctx.events.problems) if ctx.events else [])


def _fingerprint(ctx: BuildContext, meta: Any, product: Product, access: dict[str, InputAccess]) -> Fingerprint:
    """The product's fingerprint, counting what its grants let it read: a changed grant rebuilds it."""
    fp = fingerprint(ctx.mesh, meta, product, ctx.engine_for(product).name)
    for address, granted in sorted(access.items()):
        fp.digest.update(f"access {address} {granted.columns} {sorted(granted.withheld.items())} "
                         f"{granted.relation.terms()}".encode())
    return fp


def _current(ctx: BuildContext, meta: Any, product: Product) -> bool:
    try:
        access = input_access(ctx, product)
    except BuildFailed:
        return False
    fp = _fingerprint(ctx, meta, product, access)
    if is_current(meta, product, fp):
        return True
    ctx._known[product.address] = (fp, access)  # it builds: no need to work this out again
    return False


def _done(result: ProductResult) -> Future[ProductResult]:
    outcome: Future[ProductResult] = Future()
    outcome.set_result(result)
    return outcome


def _record_failure(store: Metastore, build_id: str, result: ProductResult) -> None:
    with store.session() as session:
        session.add(ProductBuildRow(build_id=build_id, product=result.address, status=result.status,
                                    message=result.message, duration_s=result.duration_s, finished_at=utcnow()))


def _build_product(ctx: BuildContext, product: Product, build_id: str, full: bool, progress: Progress,
                   publisher: ThreadPoolExecutor) -> Future[ProductResult]:
    """Land, transform and check on this thread; hand the checked candidates to the publisher.

    The product's SQL runs on a session of its own that can open only the product's reach: its landed
    inputs, the upstream files it may read (another domain's as the grant's policy relation), its
    candidates and a scratch folder removed afterwards.
    """
    started = time.perf_counter()

    def outcome(status: str, **kw: Any) -> Future[ProductResult]:
        return _done(ProductResult(product.address, status, duration_s=time.perf_counter() - started, **kw))

    run = None
    access: dict[str, InputAccess] = {}
    engine = ctx.engine_for(product)
    session: EngineSession | None = None
    scratch = ctx.warehouse / "tmp" / build_id / product.address
    try:
        known = ctx._known.pop(product.address, None)
        if known is not None:
            fp, access = known
        else:
            access = input_access(ctx, product)
            with ctx.store.session() as meta:
                fp = _fingerprint(ctx, meta, product, access)
                if not full and is_current(meta, product, fp):
                    return outcome("skipped", message="unchanged since the last build")
        if product.address in ctx.blocked:  # only a new version is held back; what is served stays
            problems = ctx.blocked[product.address]
            return outcome("failed", message=f"{len(problems)} governance policy error(s) block publishing; the "
                           "previous version stays served (see `trustmesh check`)", problems=problems)
        run = ctx.events.start(product) if ctx.events else None
        scratch.mkdir(parents=True, exist_ok=True)
        inputs = _gather_inputs(ctx, product, fp, progress, access, scratch)
        if fp.unread and not full:
            with ctx.store.session() as meta:
                fp.unread = []
                if is_current(meta, product, fp):
                    return outcome("skipped", message="unchanged since the last build")
        candidates_at = [str(data_file_path(ctx.warehouse, o.address, build_id).parent) for o in product.outputs]
        for folder in candidates_at:
            Path(folder).mkdir(parents=True, exist_ok=True)
        purposes = {p.name: p.key_id for p in ctx.mesh.config.linkage if product.domain in p.domains}
        session = engine.session(Reach(str(scratch), tuple(f for i in inputs for f in i.files), tuple(candidates_at)),
                                 tokens=bool(purposes))
        for bound in inputs:
            bound.bind(session)
        session.token_purposes = purposes
        origins = {copy: origin for i in inputs for copy, origin in i.origins.items()}
        candidates = [_transform(ctx, engine, session, product, output, build_id, progress, origins, access)
                      for output in product.outputs]
    except BuildFailed as exc:
        for output in product.outputs:  # candidates of datasets that passed are never published now
            remove_data_file(data_file_path(ctx.warehouse, output.address, build_id))
        if ctx.events and run is not None:
            ctx.events.fail(run, str(exc))
        return outcome("failed", message=str(exc).split("\n")[0].removeprefix(f"{product.address}: "),
                       problems=exc.problems)
    finally:
        if ctx._disposer is not None:  # freeing a product's database takes a while: the next one need not wait
            ctx._disposer.submit(_dispose, session, scratch)
        else:
            _dispose(session, scratch)

    findings = lineage_findings(ctx.mesh, product, [c.lineage for c in candidates if c.lineage is not None])

    def publish() -> ProductResult:
        progress.step(product.address, "publish")
        commit_snapshots(ctx.catalog(), candidates)
        pub = Publication(product, build_id, fp.value, fp.inputs, candidates, findings)
        versions = record_publication(ctx.store, ctx.mesh, pub, time.perf_counter() - started, ctx.actor)
        if ctx.events and run is not None:
            ctx.events.complete(run, [(o, c.lineage, c.report, versions.get(o.address))
                                      for o, c in zip(product.outputs, candidates, strict=True)])
        return ProductResult(product.address, "published", rows=sum(c.rows for c in candidates),
                             duration_s=time.perf_counter() - started, versions=versions)

    return publisher.submit(publish)


@dataclass
class BoundInput:
    """One input of the product being built: the view its SQL reads, and the files behind it."""

    views: list[str]
    files: list[str]
    kind: str  # file | parquet
    columns: list[str] | None = None
    port: InputPort | None = None
    origins: dict[str, str] = field(default_factory=dict)  # bronze copy → the source file it came from
    origins_read: list[str] = field(default_factory=list)  # the source files themselves, as validation read them

    def bind(self, session: EngineSession) -> None:
        for view in self.views:
            if self.kind == "file":
                assert self.port is not None
                session.bind_file(view, self.files, source_format(self.port), self.port.source.options,
                                  same_as=list(self.origins_read))
            else:
                session.bind_parquet(view, self.files, self.columns)


def _gather_inputs(ctx: BuildContext, product: Product, fp: Fingerprint, progress: Progress,
                   access: dict[str, InputAccess], scratch: Path) -> list[BoundInput]:
    """Land external inputs as bronze and find every input's files; reads database inputs into `fp`.

    Another domain's dataset becomes its policy relation for this product (masked, filtered, only the
    granted columns), written under `scratch`, so the product's session never opens the stored files.
    """
    bronze = ctx.warehouse / "bronze"
    found = []
    for port in product.inputs:
        progress.step(product.address, f"land {port.name}")
        views = [view_name(str(ref)) for ref in sorted({port.name, port.source.address} - {None}, key=str)]
        if port.source.type == "file":
            landed = land_file(product, port, fp.inputs[port.name]["fingerprint"], bronze)
            found.append(BoundInput(views, landed.files, "file", port=port, origins=landed.origins,
                                    origins_read=file_argument(product, port)))
            continue
        if port.source.type == "database":
            landed = land_database(product, port, bronze)
            fp.with_read(port.name, landed.fingerprint)
            found.append(BoundInput(views, landed.files, "parquet"))
            continue
        files = _upstream_files(ctx, product, fp.inputs[port.name])
        granted = access.get(port.source.address or "")
        if granted is not None and granted.relation.restricted:
            files = [_policy_file(ctx, product, granted, files, scratch)]
            found.append(BoundInput(views, files, "parquet"))
        else:
            found.append(BoundInput(views, files, "parquet", granted.columns if granted else None))
    return found


def _policy_file(ctx: BuildContext, product: Product, granted: InputAccess, files: list[str], scratch: Path) -> str:
    """Another domain's dataset as this product may read it, written to a Parquet file in its scratch folder.

    The platform writes it, on a session that reaches only the stored files and the scratch folder; the
    person each row of an aggregate-only dataset is about is kept only as a hash under a key used once.
    """
    relation = granted.relation
    relation.files = files
    ds = granted.dataset
    target = scratch / f"{view_name(granted.address)}.parquet"
    writer = DuckDBSession(reach=Reach(str(scratch), tuple(files), (str(scratch),)))
    try:
        key = ctx.keys or _no_keys
        register_keyed_functions(writer.con, key, KEYED)
        types = {c.name: c.type for c in writer.describe(f"SELECT * FROM read_parquet({literal(files)})")}
        salt = secrets.token_hex(16)
        sql = policy_select(relation, ds, types, key, KEYED,
                            person=lambda who: f"sha256({literal(salt)} || CAST({who} AS VARCHAR))")
        writer.write_parquet(sql, str(target))
    except QueryFailed as exc:
        raise BuildFailed(product.address, f"cannot read {granted.address} as granted", [Problem(
            product.file, f"{granted.address} could not be read under {product.address}'s grant: {exc}",
            fix=f"a {ds.domain} steward checks the grant's row filter (`trustmesh access list --as ...`)")]) from exc
    finally:
        writer.close()
    return str(target)


def _no_keys(key_id: str) -> bytes:
    raise ValueError(f"pseudonymisation key {key_id!r} is not available: this build has no key store")


def _upstream_files(ctx: BuildContext, product: Product, record: dict[str, Any]) -> list[str]:
    address = record["address"]
    if record["snapshot_id"] is None:
        raise BuildFailed(product.address, f"{address} has no published version yet", [Problem(
            product.file, f"upstream dataset {address} has never been published",
            fix=f"build it first, e.g. `trustmesh build +{product.address}` builds everything upstream too")])
    return snapshot_files(ctx.catalog(), address, record["snapshot_id"])


def _transform(ctx: BuildContext, engine: Engine, session: EngineSession, product: Product, output: OutputDataset, build_id: str,
               progress: Progress, origins: dict[str, str], access: dict[str, InputAccess]) -> Candidate:
    """Run one dataset's SQL straight into its candidate Parquet file, then check the file against the contract.

    The query's types are checked before it runs; required/primary-key checks scan the written file. A
    candidate that fails is deleted: the version served before stays served.
    """
    assert output.sql is not None and output.contract is not None
    progress.step(product.address, f"transform {output.name}")
    sql, problems = parse_product_sql(output.sql, output.sql_file)
    assert sql is not None, problems
    ports, _ = resolve_views(product, sql)
    views = {ref: view_name(ref) for ref in ports}
    aggregate_only = {ref: granted.relation.aggregate_only for ref, port in ports.items()
                      if (granted := access.get(port.source.address or "")) and granted.relation.aggregate_only}
    try:
        bound = sql.bind(views, aggregate_only=aggregate_only)
        session.check_read(bound, set(views.values()), PRODUCT)
    except QueryRefused as exc:
        raise BuildFailed(product.address, f"{output.name}: the query is refused", [Problem(
            output.sql_file, f"the query is refused: {exc}",
            fix="read only the product's inputs by their names, as its grants allow")]) from exc
    path = data_file_path(ctx.warehouse, output.address, build_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    q = engine.quote
    try:
        described = session.describe(bound)
        problems = compare_columns(engine, output, described)
        if problems:
            raise BuildFailed(product.address, f"{output.name} does not meet its contract; nothing was published",
                              problems)
        types = {c.name: c.type for c in described}
        select_list = []
        for col in output.contract.columns:
            target = engine.publish_type(types[col.name], col.physical_type)
            select_list.append(f"CAST({q(col.name)} AS {target}) AS {q(col.name)}" if target else q(col.name))
        session.write_parquet(f"SELECT {', '.join(select_list)} FROM ({bound}) AS result", str(path))
    except QueryFailed as exc:
        remove_data_file(path)
        raise _query_failure(product, output, exc, origins, access) from exc
    progress.step(product.address, f"check {output.name}")
    table = f"cand__{output.name}"
    session.bind_parquet(table, [str(path)])
    published = session.describe(f"SELECT * FROM {q(table)}")
    rules, _ = dataset_rules(ctx.mesh, output)
    report = run_quality(session, table, output.contract, rules, column_types={c.name: c.type for c in published},
                         quote=q)
    failed = report.failed("error")
    if failed:
        quarantined = quarantine(ctx.store, ctx.warehouse, output.address, build_id, path, report)
        problems = [Problem(output.contract.file, f"quality check {r.describe()}",
                            f"schema[{output.name}].quality[{r.rule.name}]",
                            fix=f"inspect the quarantined candidate (`trustmesh quality {output.address} --quarantine`,"
                                f" {quarantined}); fix the data or the SQL") for r in failed]
        raise BuildFailed(product.address, f"{output.name} failed {len(failed)} error-level quality check(s); "
                          "the candidate is quarantined and the previous version stays served", problems)
    lineage = extract_lineage(output.address, sqlglot.parse_one(bound, read=engine.capabilities.dialect),
                              {view_name(ref): {c.name: c.type for c in session.describe(f"SELECT * FROM {q(view_name(ref))}")}
                               for ref in ports},
                              {view_name(ref): (port.source.address or port.name) if port.source.type == "product"
                               else port.name
                               for ref, port in ports.items()},
                              expected=[c.name for c in published])
    return Candidate(output.address, str(path), report.rows, [{"name": c.name, "type": c.type} for c in published],
                     report=report, lineage=lineage)


def _query_failure(product: Product, output: OutputDataset, exc: QueryFailed, origins: dict[str, str],
                   access: dict[str, InputAccess]) -> BuildFailed:
    """Blame the input file when the engine names one (a malformed row), else access control, else the SQL."""
    message = str(exc)
    withheld = [(a, c, v) for a, granted in access.items() for c, v in granted.withheld.items() if c in message]
    if withheld:
        address, column, how = withheld[0]
        why = "is personal data the grant does not unmask" if how == "mask" else "is not covered by the grant"
        return BuildFailed(product.address, f"{output.name} reads {address}.{column}, which {why}", [Problem(
            output.sql_file, f"{address}.{column} {why}, so it is withheld from {product.address}: {message}",
            fix=f"stop reading {column}, or ask for it: `trustmesh access request {address} --for {product.address}"
                + (f" --unmask {column}" if how == "mask" else f" --columns ...,{column}") + " ...`")])
    sources = [origin for copy, origin in origins.items() if copy in exc.detail]
    for copy, origin in origins.items():
        message = message.replace(copy, origin)
    if sources:
        return BuildFailed(product.address, f"cannot read {', '.join(sources)}",
                           [Problem(sources[0], message, fix=landing_fix(message))])
    if "Conversion Error" in message or "Could not convert" in message:
        return BuildFailed(product.address, f"{output.name}: a value does not fit the contract's type",
                           [Problem(output.contract.file if output.contract else output.sql_file, message,
                                    fix="correct physicalType, or CAST/clean the value in the SQL")])
    return BuildFailed(product.address, f"{output.name}: the query failed",
                       [Problem(output.sql_file, f"the query failed: {message}", fix="correct the SQL or the data")])
