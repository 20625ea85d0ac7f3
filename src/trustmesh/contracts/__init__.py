"""Data-contract lifecycle: diff two versions, export a published one for outside tools, import an ODCS file.

The contract a dataset has comes from two places: the repo (what the next build will publish) and the catalog
(what the served version was published with). `repo_contract` and `published_contract` fetch each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustmesh.contracts.diff import Change, ContractDiff, Scheme, diff_contracts, is_major_bump
from trustmesh.contracts.export import export_contract
from trustmesh.contracts.importer import import_contract
from trustmesh.descriptors import load_mesh
from trustmesh.errors import InvalidMesh, NotFound, UsageError

if TYPE_CHECKING:
    from trustmesh.metastore import Metastore

__all__ = [
    "Change",
    "ContractDiff",
    "PublishedContract",
    "RepoContract",
    "Scheme",
    "diff_contracts",
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
