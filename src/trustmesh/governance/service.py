"""Governance runs: check (the CI gate), apply (re-evaluate every product when policies change), statuses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from trustmesh.access.model import PERSON, Directory
from trustmesh.access.workflow import AccessService
from trustmesh.contracts.compat import breaking_change_problems
from trustmesh.descriptors import Mesh
from trustmesh.descriptors.addresses import normalise_product_address
from trustmesh.errors import Forbidden, InvalidMesh, NotFound, Problem
from trustmesh.governance.context import RuleContext, load_state
from trustmesh.governance.evaluate import changes, evaluate, summary
from trustmesh.governance.loader import load_policies
from trustmesh.governance.model import Policy, ProductStatus
from trustmesh.metastore import Metastore, audit
from trustmesh.metastore.schema import PolicyRow, PolicyRunRow, ProductStatusRow, StatusHistoryRow

APPLY_ROLES = ("data-owner", "data-domain-steward")  # of a domain that owns policy files: who may apply them

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

    def apply(self, mesh: Mesh, actor: str) -> dict[str, Any]:
        """Re-evaluate every product under the policies as they are now, store the statuses, audit what changed.

        Returns `record`'s report with every status and the policy problems. Who may: see `check_applier`.
        """
        policies, _ = self.policies(mesh)
        self.check_applier(actor, policies)
        statuses, problems = self.evaluate(mesh)
        report = self.record(mesh, statuses, "apply", actor, policies)
        return {**report, "statuses": {a: s.to_dict() for a, s in statuses.items()},
                "problems": [p.to_dict() for p in problems]}

    def check_applier(self, actor: str, policies: list[Policy]) -> None:
        """Applying records the policies as applied by `actor`: a governance admin, or a data owner or steward of a
        domain that owns policy files (a Trusted Centre's sector policies, a domain's own).

        An actor who is no principal of the mesh is the local operator (the CLI without --as, a build), who acts
        with the repo's authority; a server caller is always a principal, so the rule always holds there.
        """
        who = self.access.directory().principals.get(actor)
        if who is None:
            return
        owners = sorted({p.owner for p in policies if p.owner})
        if who.kind == PERSON and (who.has_role("governance-admin")
                                   or any(who.has_role(r, d) for r in APPLY_ROLES for d in owners)):
            return
        raise Forbidden(f"{actor} may not apply the mesh's policies: that takes a governance admin, or a data owner "
                        f"or data domain steward of a domain with policies ({', '.join(owners) or 'none'}) — fix: ask "
                        "one of them to apply, e.g. `trustmesh policy apply --as PERSON`")

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

    def statuses(self, *, status: str | None = None, domain: str | None = None) -> dict[str, dict[str, Any]]:
        """Every product's stored status (from the last apply, build or check that recorded it), by address;
        `status` and `domain` keep only the products with that status, or of that domain."""
        query = select(ProductStatusRow).order_by(ProductStatusRow.product)
        if status:
            query = query.where(ProductStatusRow.status == status)
        if domain:
            query = query.where(ProductStatusRow.product.startswith(domain + ".", autoescape=True))
        with self.store.session() as session:
            return {row.product: _stored(row) for row in session.scalars(query)}

    def product_status(self, product: str) -> dict[str, Any]:
        """One product's stored status with its history (every evaluation, oldest first)."""
        address = normalise_product_address(product)
        with self.store.session() as session:
            row = session.get(ProductStatusRow, address)
            if row is None:
                raise NotFound(f"no governance status for {address} yet — fix: check the address (`trustmesh policy "
                               "status` lists every product's), or apply the policies (`trustmesh policy apply`, "
                               "POST /api/v1/governance/apply) to evaluate every product")
            stored = {"product": address, **_stored(row)}
        return {**stored, "history": self.history(address)}

    def history(self, product: str) -> list[dict[str, Any]]:
        with self.store.session() as session:
            rows = session.scalars(select(StatusHistoryRow).where(StatusHistoryRow.product == product)
                                   .order_by(StatusHistoryRow.id))
            return [{"run": r.run_id, "status": r.status, "failing": r.failing, "at": r.evaluated_at.isoformat()}
                    for r in rows]

    def applied_policies(self) -> dict[str, dict[str, Any]]:
        with self.store.session() as session:
            return {r.id: {"version": r.version, "content": r.content} for r in session.scalars(select(PolicyRow))}


def _stored(row: ProductStatusRow) -> dict[str, Any]:
    return {"status": row.status, "reasons": row.reasons, "deadline": row.deadline, "findings": row.findings,
            "evaluated_at": row.evaluated_at.isoformat()}
