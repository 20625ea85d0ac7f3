"""The one facade every front end calls: open a mesh, validate, build, and its catalog."""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from trustmesh.access.model import Directory
from trustmesh.access.policy import level_policies, level_policy_files, mesh_policy_files
from trustmesh.access.tokens import Tokens
from trustmesh.access.trail import AuditTrail
from trustmesh.access.workflow import AccessService, Clock
from trustmesh.build import BuildContext, BuildResult, build
from trustmesh.build.events import RunEvents
from trustmesh.build.runner import Progress
from trustmesh.catalog import Catalog
from trustmesh.descriptors import Mesh, MeshConfig, load_mesh
from trustmesh.descriptors.loader import load_config
from trustmesh.engines import Engine, get_engine
from trustmesh.errors import InvalidMesh, Problem, UsageError
from trustmesh.lineage.openlineage import LineageEmitter, default_events_path
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.anchor import AuditAnchor
from trustmesh.metastore.iceberg import iceberg_catalog, snapshot_files
from trustmesh.metastore.schema import utcnow
from trustmesh.metastore.storage import Warehouse
from trustmesh.privacy.keys import KeyStore
from trustmesh.validate import check_mesh

_log = logging.getLogger("trustmesh")

if TYPE_CHECKING:
    from trustmesh.contracts import ContractComparison, ExportedContract
    from trustmesh.governance.gate import GateReport
    from trustmesh.governance.service import Governance
    from trustmesh.query.gateway import Gateway, QueryResult
    from trustmesh.query.review import PrivacyReview

MESH_ENV = "TRUSTMESH_MESH"
USER_ENV = "TRUSTMESH_USER"
DIRECTORY_RECHECK_S = 1.0


def find_mesh_root(start: Path | str | None = None) -> Path:
    """`--mesh`, else $TRUSTMESH_MESH, else the current folder or the nearest parent holding mesh.yaml."""
    if start is not None:
        return Path(start).resolve()
    if os.environ.get(MESH_ENV):
        return Path(os.environ[MESH_ENV]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "mesh.yaml").is_file():
            return folder
    return here


class Workspace:
    """A mesh repo and the platform around it (metastore, warehouse, engine), opened lazily."""

    def __init__(self, root: Path, *, metastore_url: str | None = None, clock: Clock = utcnow) -> None:
        self.root = root.resolve()
        self._metastore_url = metastore_url
        self._iceberg: Any = None
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.clock = clock
        self._directory: tuple[Any, Directory] | None = None
        self._directory_checked = 0.0
        self.unapplied: list[Problem] = []  # problems of an edit to the repo the server did not apply

    @classmethod
    def open(cls, root: Path | str | None = None, *, metastore_url: str | None = None,
             clock: Clock = utcnow) -> Workspace:
        return cls(find_mesh_root(root), metastore_url=metastore_url, clock=clock)

    @property
    def mesh(self) -> Mesh:
        """The mesh as the files say now, loaded strictly: any problem raises InvalidMesh listing all of them."""
        mesh, _ = load_mesh(self.root)
        return mesh

    @cached_property
    def config(self) -> MeshConfig:
        """mesh.yaml alone (platform settings), without reading the domains and products."""
        return load_config(self.root)

    @property
    def metastore_url(self) -> str:
        platform = self.config.platform
        url = self._metastore_url or os.environ.get(platform.metastore_env) or platform.metastore
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_absolute():
            parsed = parsed.set(database=str(self.root / parsed.database))
        return parsed.render_as_string(hide_password=False)

    @cached_property
    def storage(self) -> Warehouse:
        """Where published data lives: the local work folder and, for an s3:// warehouse, its bucket."""
        return Warehouse.from_platform(self.config.platform, self.root)

    @property
    def warehouse(self) -> Path:
        """The local warehouse folder: staged candidates, bronze, quarantine, and a remote warehouse's read cache."""
        return self.storage.local

    @cached_property
    def store(self) -> Metastore:
        store = Metastore.open(self.metastore_url)
        audit.sign_heads(store.engine, self.audit_anchor)
        return store

    @cached_property
    def audit_anchor(self) -> AuditAnchor:
        """Signed checkpoints of the audit chain, outside the metastore: $TRUSTMESH_AUDIT_KEY_FILE and
        $TRUSTMESH_AUDIT_LOG, else `.trustmesh/audit-key.pem` and `.trustmesh/audit-checkpoints.jsonl`."""
        return AuditAnchor.for_mesh(self.root)

    @cached_property
    def engine(self) -> Engine:
        """The mesh's build engine (platform.engine), confined to the mesh folder and the warehouse."""
        return self.engine_named(self.config.platform.engine)

    def engine_named(self, name: str) -> Engine:
        """An engine by name, opened once: the mesh's, or the one a product chooses for itself."""
        with self._lock:
            if name not in self._engines:
                self.warehouse.mkdir(parents=True, exist_ok=True)
                token_key = self.keys.key if self.config.linkage else None
                settings = self.config.platform.spark.model_dump() if name == "spark" else None
                self._engines[name] = get_engine(name, [str(self.root), str(self.warehouse.resolve())], token_key,
                                                 settings)
            return self._engines[name]

    @cached_property
    def keys(self) -> KeyStore:
        """Pseudonymisation and linkage keys: `.trustmesh/keys.json` (mode 0600), or $TRUSTMESH_KEYS_FILE."""
        return KeyStore(self.root / ".trustmesh" / "keys.json")

    def iceberg(self) -> Any:
        """The Iceberg catalog, opened on first use (a no-change build never imports pyiceberg)."""
        with self._lock:
            if self._iceberg is None:
                self._iceberg = iceberg_catalog(self.store.url, self.storage)
            return self._iceberg

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.store, self.iceberg, self.storage)

    def directory(self) -> Directory:
        """People, products and datasets as the repo declares them now.

        The files are re-read only when one changed, and looked at no more than once a second: a
        long-running server sees an edit to the repo within a second.
        """
        with self._lock:
            now = time.monotonic()
            if self._directory is not None and now - self._directory_checked < DIRECTORY_RECHECK_S:
                return self._directory[1]
            stamp = _tree_stamp(self.root)
            if self._directory is None or self._directory[0] != stamp:
                try:
                    self._directory = (stamp, Directory.from_mesh(self.mesh))
                    self.unapplied = []
                except InvalidMesh as exc:
                    if self._directory is None:
                        raise
                    # An edit that breaks the mesh is not applied: everyone keeps being served the mesh as it
                    # last loaded, and the edit's problems are reported (health, the log) until it is fixed.
                    self.unapplied = list(exc.problems)
                    self._directory = (stamp, self._directory[1])
                    _log.warning("the mesh's files are not valid (%d problem(s), first: %s); serving the mesh as "
                                 "it last loaded until they are fixed", len(exc.problems),
                                 str(exc.problems[0]) if exc.problems else "")
            self._directory_checked = now
            return self._directory[1]

    def mesh_policies(self) -> str:
        """The mesh's own Cedar policies: global (`governance/*.cedar`), and each sector's and domain's
        (`domains/<d>/policies/*.cedar`: forbids only, confined to the level's own data)."""
        text = "".join(p.read_text() + "\n" for p in mesh_policy_files(self.root))
        if level_policy_files(self.root):
            text += level_policies(self.root, self.directory().mesh.domains)
        return text

    @cached_property
    def access(self) -> AccessService:
        return AccessService(self.store, self.directory, clock=self.clock, extra_policies=self.mesh_policies)

    @cached_property
    def tokens(self) -> Tokens:
        return Tokens(self.store, self.directory, self.clock, self.config.platform.oidc, self.root)

    @cached_property
    def gateway(self) -> Gateway:
        """Governed queries: the only way a consumer reads data."""
        from trustmesh.query.gateway import Gateway

        return Gateway(self.catalog, self.access, self.keys, self.root / ".trustmesh" / "query-tmp")

    def query(self, principal: str, sql: str, *, limit: int | None = None) -> QueryResult:
        """Run a read query as `principal`: only what their grants allow, masked where they say, audited."""
        return self.gateway.run(principal, sql, limit=limit)

    @cached_property
    def privacy(self) -> PrivacyReview:
        """PII scans and k-anonymity of published data (its custodians), and of a governed query's result (anyone)."""
        from trustmesh.query.review import PrivacyReview

        return PrivacyReview(self.catalog, self.access, lambda: self.gateway)

    @cached_property
    def governance(self) -> Governance:
        from trustmesh.governance.service import Governance

        return Governance(self.store, self.access, lambda address, snapshot: snapshot_files(self.iceberg(), address,
                                                                                             snapshot))

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.store, self.directory, self.audit_anchor)

    def validate(self) -> list[Problem]:
        """Every problem in the repo — standards, trustmesh rules, SQL against contracts — at once."""
        mesh, problems = load_mesh(self.root, strict=False)
        if any(p.severity == "error" for p in problems):
            return problems
        problems += check_mesh(mesh, self.engine)
        from trustmesh.governance.loader import load_policies

        problems += load_policies(mesh)[1]  # policies: known rules, valid parameters, lower levels only tighten
        if self._has_metastore():  # compare with what is published, without creating a metastore to do it
            from trustmesh.contracts.compat import breaking_change_problems

            with self.store.session() as meta:
                problems += breaking_change_problems(meta, mesh, sorted(mesh.products))
        return problems

    def _has_metastore(self) -> bool:
        parsed = make_url(self.metastore_url)
        return parsed.get_backend_name() != "sqlite" or bool(parsed.database and Path(parsed.database).exists())

    def build(self, selector: str | None = None, *, full: bool = False, progress: Progress | None = None,
              actor: str | None = None) -> BuildResult:
        mesh = self.mesh
        self.storage.check()  # an object store that does not answer fails the build before anything runs
        events = RunEvents(mesh, self.lineage_emitter())
        ctx = BuildContext(mesh, self.store, self.engine, self.warehouse, self.iceberg, engines=self.engine_named,
                           keys=self.keys.key)
        ctx.events = events
        ctx.access = self.access
        ctx.actor = actor or os.environ.get(USER_ENV) or _os_user()
        ctx.blocked = self._policy_gate(mesh, selector)
        result = build(ctx, selector, full=full, progress=progress)
        policies, problems = self.governance.policies(mesh)
        valid = not any(p.severity == "error" for p in problems)
        if policies and valid and (ctx.blocked or any(r.status == "published" for r in result.products)):
            statuses, _ = self.governance.evaluate(mesh)  # what is served now, under the policies
            self.governance.record(mesh, statuses, "build", ctx.actor, policies)
        return result

    def _policy_gate(self, mesh: Mesh, selector: str | None) -> dict[str, list[Problem]]:
        """The products a binding error-level policy finding keeps from publishing, with the findings."""
        from trustmesh.plan import select

        policies, problems = self.governance.policies(mesh)
        if not policies or any(p.severity == "error" for p in problems):
            return {}  # invalid policies are reported by validate/check; they never block on their own
        statuses, _ = self.governance.evaluate(mesh, select(mesh, selector))
        blocked: dict[str, list[Problem]] = {}
        for address, status in statuses.items():
            for f in status.findings:
                if f.severity == "error" and f.binding and not f.policy.startswith("platform:"):
                    where = ".".join(x for x in (f.dataset, f.column) if x)
                    blocked.setdefault(address, []).append(Problem(
                        f.file or mesh.products[address].file, f"policy {f.policy}: {f.message}", where, fix=f.fix))
        return blocked

    def lineage_emitter(self) -> LineageEmitter:
        """Where OpenLineage events go: the configured server, else `<warehouse>/../openlineage/events.jsonl`."""
        platform = self.config.platform
        if platform.openlineage_url:
            key = os.environ.get(platform.openlineage_api_key_env or "") or None
            return LineageEmitter(url=platform.openlineage_url, api_key=key)
        return LineageEmitter(default_events_path(self.warehouse))

    def check(self, selector: str | None = None, *, changed_since: str | None = None) -> GateReport:
        """The governance gate: every validation problem, then, when the mesh is valid, every applicable policy over
        the selected products (with `changed_since`, a git ref: only those a change since it touched). Nothing is
        recorded."""
        from trustmesh.governance.gate import GateReport
        from trustmesh.plan import select

        problems = self.validate()
        if any(p.severity == "error" for p in problems):
            return GateReport(problems, {})
        current = self.mesh
        only = self.changed_products(changed_since) if changed_since else None
        chosen = [a for a in select(current, selector) if only is None or a in only]
        statuses, _ = self.governance.evaluate(current, chosen)  # policy problems are among validate's already
        return GateReport(problems, {a: s.to_dict() for a, s in statuses.items()})

    def changed_products(self, ref: str) -> list[str] | None:
        """Products with a file changed since the git ref; None when a policy or mesh.yaml changed (check all)."""
        import subprocess

        if ref.startswith("-"):
            raise UsageError(f"--changed-since {ref!r} is not a git ref — fix: name a branch, tag or commit, "
                             "e.g. origin/main")
        try:
            out = subprocess.run(["git", "diff", "--name-only", ref, "--", "."], cwd=self.root, capture_output=True,
                                 text=True, check=True).stdout
            top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=self.root, capture_output=True,
                                 text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise UsageError(f"--changed-since {ref}: git could not compare ({detail.strip()[:200]}) — fix: run inside "
                             "the mesh's git checkout, with the ref fetched") from exc
        paths = [(Path(top) / line).resolve() for line in out.splitlines() if line.strip()]
        mesh = self.mesh
        rel = [p.relative_to(self.root) for p in paths if p.is_relative_to(self.root)]
        if any(p.parts[:1] == ("governance",) or str(p) == "mesh.yaml" or "policies" in p.parts for p in rel):
            return None
        hit = []
        for address, product in mesh.products.items():
            folder = product.folder.resolve()
            domain_file = (self.root / "domains" / product.domain / "domain.yaml").resolve()
            if any(p.is_relative_to(folder) or p == domain_file for p in paths):
                hit.append(address)
        return sorted(hit)

    def contract_diff(self, address: str, version: int | None = None) -> ContractComparison:
        """What the repo's contract of a dataset changes against the one of a published version (default: served)."""
        from trustmesh.contracts import diff_with_published
        from trustmesh.descriptors.addresses import normalise_address

        return diff_with_published(self.root, self.store, normalise_address(address), version)

    def export_contract(self, address: str, version: int | None = None) -> ExportedContract:
        """A published version's contract (default: the served one's) as standalone ODCS pointing at its files."""
        from trustmesh.contracts import ExportedContract, export_contract, published_contract
        from trustmesh.descriptors.addresses import normalise_address

        published = published_contract(self.store, normalise_address(address), version)
        storage = self.storage
        if storage.is_remote:  # where the data lives for everyone (the bucket), not this machine's cache
            number, files = self.catalog.stored_files(published.address, published.version)
        else:
            number, files = self.catalog.version_files(published.address, published.version)
        document = export_contract(published.document, address=published.address, data_files=files, version=number,
                                   endpoint=storage.settings.endpoint if storage.is_remote else None)
        return ExportedContract(published.address, number, published.contract_version, files, document)

    def compiled_quality(self, address: str) -> Any:
        """The SQL that checks a dataset, as the build runs it (from the repo's contract and benchmarks)."""
        from trustmesh.descriptors.addresses import normalise_address
        from trustmesh.errors import NotFound
        from trustmesh.quality import compile_quality, dataset_rules

        address = normalise_address(address)
        mesh = self.mesh
        output = mesh.datasets.get(address)
        if output is None or output.contract is None:
            raise NotFound(f"no dataset {address} in the mesh repo — fix: check the address (see `trustmesh catalog list`)")
        rules, problems = dataset_rules(mesh, output)
        if problems:
            raise InvalidMesh(problems, f"the quality rules of {address} are not valid")
        return compile_quality(rules, f"cand__{output.name}", self.engine.quote, dataset=output.name, address=address)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.dispose()


def _tree_stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Every descriptor's path, size and modification time: changes whenever the repo's declarations do."""
    files = [root / "mesh.yaml", *root.glob("domains/**/*.yaml"), *root.glob("domains/**/*.yml"),
             *root.glob("governance/*.cedar"), *root.glob("domains/*/policies/*.cedar")]
    stamp = []
    for f in sorted(files):
        try:
            st = f.stat()
        except OSError:
            continue
        stamp.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(stamp)


def _os_user() -> str:
    import getpass

    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return "os:unknown"
