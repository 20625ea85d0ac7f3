"""Data-contract lifecycle: diff two versions, export a published one for outside tools, import an ODCS file.

The contract a dataset has comes from two places: the repo (what the next build will publish) and the catalog
(what the served version was published with). `repo_contract` and `published_contract` fetch each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmesh.contracts.diff import Change, ContractDiff, Scheme, diff_contracts, is_major_bump, next_major
from trustmesh.contracts.export import export_contract
from trustmesh.contracts.importer import import_contract
from trustmesh.descriptors import load_mesh
from trustmesh.errors import InvalidMesh, NotFound, UsageError

if TYPE_CHECKING:
    from trustmesh.metastore import Metastore

__all__ = [
    "Change",
    "ContractComparison",
    "ContractDiff",
    "ExportedContract",
    "PublishedContract",
    "RepoContract",
    "Scheme",
    "compare_contracts",
    "diff_contracts",
    "diff_with_published",
    "export_contract",
    "import_contract",
    "is_major_bump",
    "published_contract",
    "repo_contract",
]


@dataclass(frozen=True)
class RepoContract:
    """A dataset's contract as the repo holds it now, and the mesh's classification scheme."""

    address: str
    file: str
    document: dict[str, Any]
    scheme: Scheme


@dataclass(frozen=True)
class PublishedContract:
    """The contract a published version was built against, as registered in the catalog."""

    address: str
    version: int
    contract_version: str
    document: dict[str, Any]


def _parts(address: str) -> list[str]:
    parts = address.split(".")
    if len(parts) != 3 or not all(parts):
        raise UsageError(f"{address!r} is not a dataset address — fix: use <domain>.<product>.<dataset>, "
                         "e.g. bts.flights-dp.flights")
    return parts


def repo_contract(root: Path, address: str) -> RepoContract:
    """Read one dataset's contract (`address` as `catalog.normalise_address` gives it); problems elsewhere in the
    mesh do not stop it, its own do."""
    domain, product, _ = _parts(address)
    mesh, problems = load_mesh(root, strict=False)
    dataset = mesh.datasets.get(address)
    if dataset is None or dataset.contract is None:
        own = [p for p in problems if p.file.startswith(f"domains/{domain}/products/{product}/")]
        if own:
            raise InvalidMesh(own, f"cannot read the contract of {address}")
        raise NotFound(f"no dataset {address} in the mesh repo {mesh.root} — fix: check the address "
                       f"(<domain>.<product>.<dataset>; known: {', '.join(sorted(mesh.datasets)[:5]) or 'none'})")
    classification = mesh.config.governance.classification
    return RepoContract(address, dataset.contract.file, dataset.contract.document,
                        Scheme(tuple(classification.levels), tuple(classification.sensitivities)))


def published_contract(store: Metastore, address: str, version: int | None = None) -> PublishedContract:
    """The registered contract of version `version` (default: the served one).

    The metastore keeps one contract document per dataset, the one of its latest publication; an older
    version's contract is that document only when the version was published under the same contract version.
    """
    from sqlalchemy import select

    from trustmesh.metastore.schema import DatasetRow, VersionRow

    _parts(address)
    with store.session() as session:
        row = session.get(DatasetRow, address)
        if row is None:
            raise NotFound(f"no dataset {address} in the catalog — fix: `trustmesh catalog list` to find it; "
                           "build it first if it is new")
        document, registered, current = dict(row.contract), row.contract_version, row.current_version
        versions: dict[int, str] = {v: cv for v, cv in session.execute(
            select(VersionRow.version, VersionRow.contract_version).where(VersionRow.dataset == address))}
    if not versions or current is None:
        raise NotFound(f"{address} has no published version yet — fix: `trustmesh build {address}`")
    number = current if version is None else version
    if number not in versions:
        raise NotFound(f"{address} has no version {number} — fix: pick one of {', '.join(map(str, sorted(versions)))}")
    if versions[number] != registered:
        same = sorted(v for v, cv in versions.items() if cv == registered)
        raise NotFound(
            f"the contract of {address} version {number} (contract {versions[number] or 'unknown'}) is not "
            f"available: the catalog keeps only the contract registered now (contract {registered}, published as "
            f"version {', '.join(map(str, same))}) — fix: compare with that contract's file instead, e.g. "
            f"`git show <commit>:<path to the contract> > old.odcs.yaml` then `--against old.odcs.yaml`")
    return PublishedContract(address, number, registered, document)


@dataclass(frozen=True)
class ExportedContract:
    """A published version's contract as standalone ODCS, with the data files its `servers` entry points at."""

    address: str
    version: int
    contract_version: str
    data_files: list[str]
    document: dict[str, Any]


@dataclass(frozen=True)
class ContractComparison:
    """The repo's contract of a dataset next to an earlier one: where each came from, and what changed."""

    address: str
    old: dict[str, Any]  # {"source": "catalog", "version", "contract_version"} or {"source": "file", "file", ...}
    new: dict[str, Any]  # {"source": "repo", "file", "contract_version"}
    diff: ContractDiff

    @property
    def fix(self) -> str | None:
        """What to do when a breaking change ships without a major version bump; None when nothing is needed."""
        if not self.diff.requires_major_bump():
            return None
        wanted = next_major(self.diff.old_version)
        bump = f"set `version: {wanted}` in {self.new['file']}" if wanted else f"raise the major version in {self.new['file']}"
        return f"{bump}, and tell the consumers"

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "old": self.old, "new": self.new, **self.diff.to_dict()}


def compare_contracts(new: RepoContract, old_document: dict[str, Any], old: dict[str, Any]) -> ContractComparison:
    """Diff the repo's contract against `old_document`, labelled by where it came from (`old`)."""
    result = diff_contracts(old_document, new.document, scheme=new.scheme)
    label = {"source": "repo", "file": new.file, "contract_version": result.new_version}
    return ContractComparison(new.address, old, label, result)


def diff_with_published(root: Path, store: Metastore, address: str, version: int | None = None) -> ContractComparison:
    """What the repo's contract changes against the one registered for version `version` (default: the served one)."""
    new = repo_contract(root, address)
    published = published_contract(store, new.address, version)
    return compare_contracts(new, published.document, {"source": "catalog", "version": published.version,
                                                       "contract_version": published.contract_version})
