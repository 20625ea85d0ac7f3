"""What rules may look at: the mesh as the repo declares it, and the platform's state, loaded once per run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trustmesh.access.model import Directory
from trustmesh.access.policy import Authorizer, GrantTerms
from trustmesh.descriptors import Mesh
from trustmesh.errors import Problem
from trustmesh.metastore.schema import DatasetRow, FindingRow, VersionRow


@dataclass
class RuleContext:
    """The mesh and what is served: findings, versions, active grants; expensive parts computed on demand."""

    mesh: Mesh
    directory: Directory
    now: datetime
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # dataset → served version's findings
    served: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset → {version, snapshot_id, quality}
    grants: list[GrantTerms] = field(default_factory=list)
    files: Callable[[str], list[str] | None] | None = None  # served data files of a dataset (for rules that read data)
    breaking: Callable[[str], list[Problem]] | None = None  # breaking contract changes of a product
    _authorizer: Authorizer | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def authorizer(self) -> Authorizer:
        if self._authorizer is None:
            self._authorizer = Authorizer(self.directory, self.grants)
        return self._authorizer


def load_state(session: Session, ctx: RuleContext) -> None:
    """Fill the context from the metastore in a few queries, whatever the number of products."""
    rows = session.execute(select(DatasetRow, VersionRow).outerjoin(
        VersionRow, (VersionRow.dataset == DatasetRow.address) & (VersionRow.version == DatasetRow.current_version)))
    for ds, version in rows.all():
        if version is not None:
            ctx.served[ds.address] = {"version": version.version, "snapshot_id": version.snapshot_id,
                                      "quality": version.quality or {}}
    found = session.execute(select(FindingRow).join(DatasetRow, (DatasetRow.address == FindingRow.dataset)
                                                    & (DatasetRow.current_version == FindingRow.version)))
    for f in found.scalars():
        ctx.findings.setdefault(f.dataset, []).append({"kind": f.kind, "column": f.column, "message": f.message,
                                                       "severity": f.severity})
