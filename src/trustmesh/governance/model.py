"""Policies as data: who they apply to, what they check, how severe, from when — and what failing them means."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trustmesh.descriptors import Mesh, Product
from trustmesh.descriptors.models import NAME_PATTERN

SEVERITIES = ("info", "warning", "error")
LEVELS = ("global", "sector", "domain")
STATUSES = ("compliant", "at-risk", "unfit for consumption")


class Scope(BaseModel):
    """Which products a policy applies to; every condition given must hold. Empty: every product."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    domains: list[str] = []
    sectors: list[str] = []
    kinds: list[str] = []
    tiers: list[str] = []
    classifications: list[str] = []  # a product matches when any of its datasets has one of these levels
    exempt: list[str] = []  # product addresses the policy does not apply to

    def matches(self, mesh: Mesh, product: Product) -> bool:
        if product.address in self.exempt:
            return False
        domain = mesh.domains.get(product.domain)
        if self.domains and product.domain not in self.domains:
            return False
        if self.sectors and (domain is None or domain.sector not in self.sectors):
            return False
        if self.kinds and product.kind not in self.kinds:
            return False
        if self.tiers and product.tier not in self.tiers:
            return False
        if self.classifications:
            levels = {c.classification for o in product.outputs if o.contract for c in o.contract.columns}
            if not levels & set(self.classifications):
                return False
        return True

    def describe(self) -> str:
        """The scope in one line: `sectors=health, exempt=health.activity-dp`, or `all` when it is empty."""
        return ", ".join(f"{k}={','.join(v)}" for k, v in self.model_dump().items() if v) or "all"


class Policy(BaseModel):
    """One policy file: a rule applied, with parameters, to a scope, at a severity, from a date."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9._-]*$")
    version: int = Field(1, ge=1)
    title: str
    rationale: str = ""
    rule: str = Field(pattern=NAME_PATTERN)
    severity: Literal["info", "warning", "error"] = "error"
    scope: Scope = Field(default_factory=Scope)
    effective: date | None = None  # from this day; None: at once
    grace_days: int = Field(0, alias="graceDays", ge=0, le=3650)
    params: dict[str, Any] = {}
    tightens: str | None = None  # the id of the (higher-level) policy this one tightens
    # where it came from (set by the loader)
    level: Literal["global", "sector", "domain"] = "global"
    owner: str | None = None  # the domain of a sector or domain policy
    file: str = ""

    def deadline(self) -> datetime | None:
        """When failing becomes binding: the effective day plus the grace period (None: already binding)."""
        if self.effective is None and not self.grace_days:
            return None
        start = datetime.combine(self.effective or date.min, datetime.min.time(), tzinfo=UTC)
        return start + timedelta(days=self.grace_days)

    def in_force(self, now: datetime) -> bool:
        return self.effective is None or now.date() >= self.effective

    def binding(self, now: datetime) -> bool:
        deadline = self.deadline()
        return self.in_force(now) and (deadline is None or now >= deadline)

    def digest(self) -> dict[str, Any]:
        """What identifies this version of the policy (to detect changes)."""
        return self.model_dump(mode="json", exclude={"file"})


@dataclass(frozen=True)
class Violation:
    """One way a product fails a rule: where (dataset, column), what, and how to fix it."""

    message: str
    dataset: str | None = None
    column: str | None = None
    fix: str = ""


@dataclass
class Finding:
    """A violation of one policy by one product, with the policy's severity and deadline."""

    product: str
    policy: str
    policy_version: int
    rule: str
    severity: str
    level: str
    message: str
    dataset: str | None = None
    column: str | None = None
    fix: str = ""
    binding: bool = True
    deadline: str | None = None
    file: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"product": self.product, "policy": self.policy, "policy_version": self.policy_version,
                "rule": self.rule, "severity": self.severity, "level": self.level, "message": self.message,
                "dataset": self.dataset, "column": self.column, "fix": self.fix, "binding": self.binding,
                "deadline": self.deadline, "file": self.file}


@dataclass
class ProductStatus:
    """compliant, at-risk (failing a policy still in grace: deadline given) or unfit for consumption."""

    product: str
    status: str
    reasons: list[str] = field(default_factory=list)
    deadline: str | None = None
    findings: list[Finding] = field(default_factory=list)
    policies: dict[str, int] = field(default_factory=dict)  # policy id → version evaluated

    def to_dict(self) -> dict[str, Any]:
        return {"product": self.product, "status": self.status, "reasons": self.reasons, "deadline": self.deadline,
                "findings": [f.to_dict() for f in self.findings], "policies": self.policies}
