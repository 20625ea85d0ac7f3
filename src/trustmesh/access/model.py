"""Who may ask and who may decide: principals (people and products) and datasets, read from the mesh repo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trustmesh.descriptors import Mesh
from trustmesh.descriptors.models import DOMAIN_ROLES
from trustmesh.descriptors.people import agency, clearance, declarations, trust_problems
from trustmesh.errors import InvalidMesh
from trustmesh.metastore.registry import highest

# The same words everywhere: CLI, --json, API and UI.
REQUEST_STATES = ("pending", "approved", "rejected", "withdrawn", "expired")
GRANT_STATES = ("active", "expired", "revoked")
# Roles that see their own domain's personal data in the clear; developers see it masked.
CUSTODIAN_ROLES = ("data-owner", "data-domain-steward", "data-product-owner")
PERSON, PRODUCT = "person", "product"


@dataclass(frozen=True)
class Principal:
    """A person declared in mesh.yaml or a domain.yaml, or a data product reading another domain's data."""

    id: str
    kind: str
    name: str
    email: str | None = None
    domain: str | None = None  # a person's agency (set by governance, else their domain), a product's domain
    clearance: str | None = None
    roles: frozenset[tuple[str, str | None]] = frozenset()  # (role, domain); domain None for mesh-wide roles
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def has_role(self, role: str, domain: str | None = None) -> bool:
        return (role, domain) in self.roles

    def member_of(self) -> set[str]:
        """Domains this principal belongs to (holds a domain role in, or is a product of)."""
        if self.kind == PRODUCT:
            return {self.domain} if self.domain else set()
        return {d for r, d in self.roles if d is not None and r in DOMAIN_ROLES}

    def custodian_of(self) -> set[str]:
        if self.kind == PRODUCT:
            return self.member_of()
        return {d for r, d in self.roles if d is not None and r in CUSTODIAN_ROLES}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "email": self.email, "domain": self.domain,
                "clearance": self.clearance,
                "roles": sorted(f"{d}/{r}" if d else r for r, d in self.roles)}


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    classification: str | None
    sensitivity: str
    pii_type: str | None

    @property
    def personal(self) -> bool:
        return self.pii_type is not None


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as access control sees it: its domain, its columns' labels, who approves requests for it."""

    address: str
    domain: str
    product: str
    columns: dict[str, ColumnInfo]
    first_level: tuple[str, ...] = ()  # from the contract's ODCS `roles`, when it names approvers
    second_level: tuple[str, ...] = ()

    def classification(self, levels: list[str], columns: list[str] | None = None) -> str | None:
        return highest([self.columns[c].classification for c in columns or self.columns], levels)

    def sensitivity(self, sensitivities: list[str], columns: list[str] | None = None) -> str:
        return highest([self.columns[c].sensitivity for c in columns or self.columns], sensitivities) or sensitivities[0]

    @property
    def personal_columns(self) -> list[str]:
        return [c.name for c in self.columns.values() if c.personal]


def _approvers(text: Any) -> tuple[str, ...]:
    if isinstance(text, str):
        return tuple(p.strip() for p in text.replace(";", ",").split(",") if p.strip())
    return ()


@dataclass
class Directory:
    """Every principal and dataset of a mesh, indexed for the workflow and the authorizer."""

    mesh: Mesh
    principals: dict[str, Principal]
    datasets: dict[str, DatasetInfo]
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # derived, e.g. Cedar entities

    @classmethod
    def from_mesh(cls, mesh: Mesh) -> Directory:
        """Principals and datasets of a loaded mesh.

        Refuses (InvalidMesh) a person declared twice, or a domain that set a clearance, an agency or a role
        outside itself, rather than pick one declaration: the loader reports these, so only a mesh loaded
        leniently despite them gets here.
        """
        declared = declarations(mesh)
        refused = trust_problems(declared)
        if refused:
            raise InvalidMesh(refused, "the mesh's people cannot be trusted as declared")
        principals: dict[str, Principal] = {}
        for decl in declared:
            p = decl.person
            held = frozenset((r, decl.domain if r in DOMAIN_ROLES else None) for r in p.roles)
            principals[p.id] = Principal(p.id, PERSON, p.name, p.email, agency(mesh, decl), clearance(mesh, decl),
                                         held, dict(p.attributes))
        people = set(principals)
        for address, product in mesh.products.items():
            principals[address] = Principal(address, PRODUCT, product.name, None, product.domain)
        datasets: dict[str, DatasetInfo] = {}
        for address, output in mesh.datasets.items():
            if output.contract is None:
                continue
            roles = output.contract.document.get("roles") or []
            # Only names of the mesh's people route requests; ODCS also allows free text such as a job title.
            first = tuple(a for r in roles if isinstance(r, dict) for a in _approvers(r.get("firstLevelApprovers"))
                          if a in people)
            second = tuple(a for r in roles if isinstance(r, dict) for a in _approvers(r.get("secondLevelApprovers"))
                           if a in people)
            datasets[address] = DatasetInfo(address, output.domain, f"{output.domain}.{output.product}", {
                c.name: ColumnInfo(c.name, c.classification, c.sensitivity, c.pii_type) for c in output.contract.columns
            }, first, second)
        return cls(mesh, principals, datasets)

    @property
    def levels(self) -> list[str]:
        found = self.cache.get("levels")
        if found is None:
            found = self.cache["levels"] = list(self.mesh.config.governance.classification.levels)
        return list(found)

    @property
    def sensitivities(self) -> list[str]:
        return list(self.mesh.config.governance.classification.sensitivities)

    def rank(self, level: str | None) -> int:
        """Position of an IM8 level in the mesh's scheme; unlabelled data counts as the lowest level."""
        ranks = self.cache.get("ranks")
        if ranks is None:
            ranks = self.cache["ranks"] = {name: i for i, name in enumerate(self.levels)}
        return int(ranks.get(level, 0)) if level is not None else 0

    def clearance_rank(self, principal: Principal) -> int:
        if principal.kind == PRODUCT:
            return len(self.levels)  # a product's reads are bounded by its grants, not a clearance
        return self.rank(principal.clearance or self.mesh.config.access.default_clearance)

    def people_in_role(self, role: str, domain: str | None) -> list[Principal]:
        return [p for p in self.principals.values() if p.kind == PERSON and p.has_role(role, domain)]
