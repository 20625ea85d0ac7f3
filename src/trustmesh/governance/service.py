"""Governance runs: check (the CI gate), apply (re-evaluate every product when policies change), statuses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from trustmesh.access.model import Directory
from trustmesh.access.workflow import AccessService
from trustmesh.contracts.compat import breaking_change_problems
from trustmesh.descriptors import Mesh
from trustmesh.errors import InvalidMesh, Problem
from trustmesh.governance.context import RuleContext, load_state
from trustmesh.governance.evaluate import changes, evaluate, summary
from trustmesh.governance.loader import load_policies
from trustmesh.governance.model import Policy, ProductStatus
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.schema import PolicyRow, PolicyRunRow, ProductStatusRow, StatusHistoryRow


class Governance:
    """Policies of one mesh over its metastore; `files(address, snapshot_id)` plans a version's data files."""

    def __init__(self, store: Metastore, access: AccessService, files: Callable[[str, int], list[str]]) -> None:
        self.store = store
        self.access = access
        self._files = files

    def policies(self, mesh: Mesh) -> tuple[list[Policy], list[Problem]]:
        return load_policies(mesh)

    def context(self, mesh: Mesh, directory: Directory | None = None) -> RuleContext:
        ctx = RuleContext(mesh, directory or Directory.from_mesh(mesh), self.access.clock(),
                          grants=self.access.active_grants())
        with self.store.session() as session:
            load_state(session, ctx)

        def files(address: str) -> list[str] | None:
            served = ctx.served.get(address)
            return self._files(address, served["snapshot_id"]) if served else None

        def breaking(product: str) -> list[Problem]:
            with self.store.session() as session:
                return breaking_change_problems(session, mesh, [product])

        ctx.files, ctx.breaking = files, breaking
        return ctx

    def evaluate(self, mesh: Mesh, products: list[str] | None = None) -> tuple[dict[str, ProductStatus], list[Problem]]:
        """Statuses of the products (default: all) under the mesh's policies; policy problems alongside."""
        policies, problems = self.policies(mesh)
        if any(p.severity == "error" for p in problems):
            raise InvalidMesh(problems, "the policies are not valid")
        return evaluate(self.context(mesh), policies, products), problems

    def record(self, mesh: Mesh, statuses: dict[str, ProductStatus], trigger: str, actor: str,
               policies: list[Policy]) -> dict[str, Any]:
        """Store statuses and their history; audit policy changes with their diff; report what changed."""
        now = self.access.clock()
        with self.store.session() as session:
            before = {row.product: {f["policy"]: True for f in row.findings if f.get("severity") == "error"}
                      for row in session.scalars(select(ProductStatusRow))}
            changed = self._register_policies(session, policies, actor, now) if trigger == "apply" else []
            run = PolicyRunRow(trigger=trigger, actor=actor, started_at=now,
                               policies={p.id: p.version for p in policies}, summary=summary(statuses))
            session.add(run)
            session.flush()
            for address, status in statuses.items():
                session.merge(ProductStatusRow(product=address, status=status.status, reasons=status.reasons,
                                               deadline=status.deadline, findings=[f.to_dict() for f in status.findings],
                                               policies=status.policies, run_id=run.id, evaluated_at=now))
                session.add(StatusHistoryRow(product=address, run_id=run.id, status=status.status,
                                             failing=sorted({f.policy for f in status.findings}), evaluated_at=now))
            versions = {p.id: p.version for p in policies}
            reported = changed if changed else list(versions)
            moved = changes(before, statuses, [(pid, versions.get(pid)) for pid in reported])
            report = {"run": run.id, "trigger": trigger, "summary": run.summary, "changed_policies": changed,
                      "changes": [c for c in moved if c["newly_failing"] or c["fixed"]]}
            audit.append(session, "governance.evaluated", actor, "mesh", {
                "run": run.id, "trigger": trigger, **run.summary, "changed_policies": changed,
                "unfit": sorted(a for a, s in statuses.items() if s.status == "unfit for consumption")}, at=now)
        return report

    def _register_policies(self, session: Any, policies: list[Policy], actor: str, now: datetime) -> list[str]:
        """Store the policies as applied; each new, changed or removed one is an audit entry with its diff."""
        known = {row.id: row for row in session.scalars(select(PolicyRow))}
        changed = []
        for policy in policies:
            content = policy.digest()
            row = known.pop(policy.id, None)
            if row is not None and row.content == content:
                continue
            diff = {k: {"from": (row.content or {}).get(k) if row else None, "to": v} for k, v in content.items()
                    if row is None or (row.content or {}).get(k) != v}
            audit.append(session, "policy.changed", actor, policy.id, {
                "version": policy.version, "was": row.version if row else None, "file": policy.file, "diff": diff},
                at=now)
            session.merge(PolicyRow(id=policy.id, version=policy.version, level=policy.level, owner=policy.owner,
                                    rule=policy.rule, severity=policy.severity, content=content, file=policy.file,
                                    applied_at=now))
            changed.append(policy.id)
        for gone in known.values():
            audit.append(session, "policy.changed", actor, gone.id, {"version": None, "was": gone.version,
                                                                    "removed": True}, at=now)
            session.delete(gone)
            changed.append(gone.id)
        return changed

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Every product's stored status (from the last apply, build or check that recorded it)."""
        with self.store.session() as session:
            return {row.product: {"status": row.status, "reasons": row.reasons, "deadline": row.deadline,
                                  "findings": row.findings, "evaluated_at": row.evaluated_at.isoformat()}
                    for row in session.scalars(select(ProductStatusRow))}

    def history(self, product: str) -> list[dict[str, Any]]:
        with self.store.session() as session:
            rows = session.scalars(select(StatusHistoryRow).where(StatusHistoryRow.product == product)
                                   .order_by(StatusHistoryRow.id))
            return [{"run": r.run_id, "status": r.status, "failing": r.failing, "at": r.evaluated_at.isoformat()}
                    for r in rows]

    def applied_policies(self) -> dict[str, dict[str, Any]]:
        with self.store.session() as session:
            return {r.id: {"version": r.version, "content": r.content} for r in session.scalars(select(PolicyRow))}
