"""Evaluating policies: every applicable policy on every product, and what the results mean for each.

A product is `compliant`, `at-risk` (failing an error policy still in its grace period: the deadline is
given) or `unfit for consumption` (failing an error policy past its grace period, or the platform's own
gates: a served version that failed error-level quality checks). A rule that raises is reported as a
problem of its policy; the other policies still run.
"""

from __future__ import annotations

from typing import Any

from trustmesh.descriptors import Product
from trustmesh.governance.context import RuleContext
from trustmesh.governance.model import Finding, Policy, ProductStatus, Violation
from trustmesh.governance.rules import rules

UNFIT, AT_RISK, COMPLIANT = "unfit for consumption", "at-risk", "compliant"


def applicable(ctx: RuleContext, policy: Policy, product: Product) -> bool:
    return policy.in_force(ctx.now) and policy.scope.matches(ctx.mesh, product)


def evaluate_product(ctx: RuleContext, policies: list[Policy], product: Product) -> ProductStatus:
    known = rules()
    status = ProductStatus(product.address, COMPLIANT)
    for policy in policies:
        if not applicable(ctx, policy, product):
            continue
        status.policies[policy.id] = policy.version
        rule = known[policy.rule]
        try:
            violations = rule.check(ctx, product, rule.params.model_validate(policy.params))
        except Exception as exc:  # a broken (custom) rule fails its own policy, not the run
            violations = [Violation(f"rule {rule.name} could not be evaluated: {type(exc).__name__}: {exc}",
                                    fix="fix the rule (or report it to its author)")]
        deadline = policy.deadline()
        for v in violations:
            status.findings.append(Finding(
                product.address, policy.id, policy.version, policy.rule, policy.severity, policy.level, v.message,
                v.dataset, v.column, v.fix, policy.binding(ctx.now),
                deadline.isoformat() if deadline else None, policy.file))
    status.findings += _gates(ctx, product)
    errors = [f for f in status.findings if f.severity == "error"]
    binding = [f for f in errors if f.binding]
    if binding:
        status.status = UNFIT
        status.reasons = sorted({f"{f.policy}: {f.message}" for f in binding})
    elif errors:
        status.status = AT_RISK
        status.deadline = min(f.deadline for f in errors if f.deadline)
        status.reasons = sorted({f"{f.policy} (binding from {f.deadline}): {f.message}" for f in errors})
    return status


def _gates(ctx: RuleContext, product: Product) -> list[Finding]:
    """The platform's own gate: a served version that failed error-level quality checks is unfit."""
    out = []
    for output in product.outputs:
        served = ctx.served.get(output.address)
        failed = (served or {}).get("quality", {}).get("failed_errors") or 0
        if failed:
            out.append(Finding(product.address, "platform:quality-gate", 1, "quality-gate", "error", "global",
                               f"the served version of {output.address} failed {failed} error-level quality check(s)",
                               output.address, fix=f"see `trustmesh quality {output.address}`; publish a version "
                               "that passes"))
    return out


def evaluate(ctx: RuleContext, policies: list[Policy], products: list[str] | None = None) -> dict[str, ProductStatus]:
    """Statuses of the given products (default: all), in address order."""
    chosen = sorted(ctx.mesh.products) if products is None else products
    return {a: evaluate_product(ctx, policies, ctx.mesh.products[a]) for a in chosen}


def summary(statuses: dict[str, ProductStatus]) -> dict[str, Any]:
    counts = {COMPLIANT: 0, AT_RISK: 0, UNFIT: 0}
    for s in statuses.values():
        counts[s.status] += 1
    return {"products": len(statuses), **counts,
            "errors": sum(1 for s in statuses.values() for f in s.findings if f.severity == "error"),
            "warnings": sum(1 for s in statuses.values() for f in s.findings if f.severity == "warning")}


def changes(before: dict[str, dict[str, Any]], after: dict[str, ProductStatus],
            policies: list[tuple[str, int | None]]) -> list[dict[str, Any]]:
    """Per policy (id, version; version None: removed): products newly non-compliant with it (an error-level
    finding) and products no longer so ("policy X v2: N newly non-compliant, M fixed"). `before` maps product →
    {policy id: non-compliant?} from the last stored run."""
    out = []
    for policy_id, version in policies:
        newly, fixed = [], []
        for address, status in after.items():
            failing = any(f.policy == policy_id and f.severity == "error" for f in status.findings)
            was = before.get(address, {}).get(policy_id, False)
            if failing and not was:
                newly.append(address)
            elif was and not failing:
                fixed.append(address)
        out.append({"policy": policy_id, "version": version, "newly_failing": newly, "fixed": fixed})
    return out
