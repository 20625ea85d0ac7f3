"""Policy files at three levels, read and checked: the global office's, each Trusted Centre's, each domain's.

- global: `governance/policies/*.yaml` — may apply anywhere;
- sector: `domains/<trusted-centre>/policies/*.yaml` — applies only within the centre's sector;
- domain: `domains/<domain>/policies/*.yaml` — applies only within the domain.

A file holds one policy, or `policies: [...]`. A sector or domain policy that uses the same rule as a
policy above it may only tighten it: a severity as high or higher, parameters at least as strict, no
exemptions of products the higher policy covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trustmesh.descriptors import Mesh
from trustmesh.errors import Problem
from trustmesh.governance.model import SEVERITIES, Policy
from trustmesh.governance.rules import Rule, looser, rules
from trustmesh.yamlfile import load_yaml


def policy_files(mesh: Mesh) -> list[tuple[Path, str, str | None]]:
    """(file, level, owning domain) of every policy file of the mesh, in a stable order."""
    root = mesh.root
    found: list[tuple[Path, str, str | None]] = [(p, "global", None) for p in sorted((root / "governance" /
                                                                                     "policies").glob("*.y*ml"))]
    for name, domain in sorted(mesh.domains.items()):
        level = "sector" if domain.kind == "trusted-centre" else "domain"
        found += [(p, level, name) for p in sorted((root / "domains" / name / "policies").glob("*.y*ml"))]
    return found


def load_policies(mesh: Mesh) -> tuple[list[Policy], list[Problem]]:
    """Every policy of the mesh and every problem with them, all at once."""
    policies: list[Policy] = []
    problems: list[Problem] = []
    files = policy_files(mesh)
    if not files:
        return policies, problems
    known = rules()
    for path, level, owner in files:
        rel = str(path.relative_to(mesh.root))
        doc, error = load_yaml(path)
        if error is not None:
            problems.append(error)
        if doc is None:
            continue
        data = doc.data
        listed = isinstance(data, dict) and "policies" in data
        entries = data["policies"] if listed else [data]
        if not isinstance(entries, list):
            problems.append(Problem(rel, "a policy file holds one policy, or `policies:` with a list of them"))
            continue
        for i, entry in enumerate(entries):
            where: list[Any] = ["policies", i] if listed else []
            policy = _parse(mesh, doc, rel, where, entry, level, owner, known, problems)
            if policy is not None:
                policies.append(policy)
    problems += _conflicts(mesh, policies, known)
    return policies, problems


def _parse(mesh: Mesh, doc: Any, rel: str, where: list[Any], entry: Any, level: str, owner: str | None,
           known: dict[str, Rule], problems: list[Problem]) -> Policy | None:
    if not isinstance(entry, dict):
        problems.append(doc.problem(where, "a policy is a mapping (id, title, rule, severity, ...)",
                                    "see docs/governance.md"))
        return None
    try:
        policy = Policy.model_validate({**entry, "level": level, "owner": owner, "file": rel})
    except ValidationError as exc:
        for err in exc.errors():
            loc = [*where, *err["loc"]]
            problems.append(doc.problem(loc, f"{'.'.join(map(str, err['loc'])) or 'policy'}: {err['msg']}",
                                        "effective is a date (2026-01-31); severity is info, warning or error"))
        return None
    rule = known.get(policy.rule)
    if rule is None:
        problems.append(doc.problem([*where, "rule"], f"unknown rule {policy.rule!r}",
                                    f"one of {', '.join(sorted(known))} (or a plugin's, entry point trustmesh.rules)"))
        return None
    try:
        policy.params = rule.params.model_validate(policy.params).model_dump()
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(doc.problem([*where, "params", *err["loc"]], f"params.{'.'.join(map(str, err['loc']))}: "
                                        f"{err['msg']}", f"parameters of {rule.name}: "
                                        f"{', '.join(rule.params.model_fields) or 'none'}"))
        return None
    if level != "global":  # a lower level governs only its own sector or domain
        domain = mesh.domains[owner] if owner else None
        if level == "sector" and domain is not None:
            outside = [s for s in policy.scope.sectors if s != domain.sector]
            if outside:
                problems.append(doc.problem([*where, "scope", "sectors"], f"a sector policy of {owner} covers only "
                                            f"the {domain.sector} sector, not {', '.join(outside)}",
                                            "leave sectors out, or ask the global office"))
            policy.scope.sectors = [domain.sector]
        elif level == "domain" and owner:
            outside = [d for d in policy.scope.domains if d != owner]
            if outside:
                problems.append(doc.problem([*where, "scope", "domains"], f"a policy of the {owner} domain covers "
                                            f"only {owner}, not {', '.join(outside)}", "leave domains out"))
            policy.scope.domains = [owner]
    if not any(policy.scope.matches(mesh, p) for p in mesh.products.values()) and mesh.products:
        problems.append(Problem(rel, f"policy {policy.id}'s scope matches no product", severity="warning",
                                fix="check the scope's domains, sectors, kinds, tiers and classifications"))
    return policy


RANK = {"global": 0, "sector": 1, "domain": 2}


def _conflicts(mesh: Mesh, policies: list[Policy], known: dict[str, Rule]) -> list[Problem]:
    """Duplicate ids, and lower-level policies that would loosen a higher-level one of the same rule."""
    problems: list[Problem] = []
    seen: dict[str, Policy] = {}
    for policy in policies:
        if policy.id in seen:
            problems.append(Problem(policy.file, f"policy id {policy.id} is also used in {seen[policy.id].file}",
                                    fix="give every policy its own id"))
        seen.setdefault(policy.id, policy)
    for lower in policies:
        if lower.level == "global":
            continue
        targets = [p for p in policies if RANK[p.level] < RANK[lower.level] and _related(mesh, lower, p)]
        if lower.tightens:
            named = seen.get(lower.tightens)
            if named is None:
                problems.append(Problem(lower.file, f"policy {lower.id} tightens {lower.tightens}, which does not "
                                        "exist", fix="name an existing global or sector policy"))
            elif named not in targets:
                targets.append(named)
        for higher in targets:
            why = _loosening(known[lower.rule], lower, higher) if lower.rule == higher.rule else \
                [f"it uses rule {lower.rule}, not {higher.rule}"]
            if why:
                problems.append(Problem(
                    lower.file, f"policy {lower.id} ({lower.level}) would loosen policy {higher.id} ({higher.level}, "
                    f"{higher.file}): {'; '.join(why)}",
                    fix=f"a {lower.level} policy may only tighten: raise, never lower, what {higher.id} requires"))
    return problems


def _related(mesh: Mesh, lower: Policy, higher: Policy) -> bool:
    """Same rule, and the higher policy covers (some of) the lower one's products."""
    if lower.rule != higher.rule:
        return False
    mine = [p for p in mesh.products.values() if lower.scope.model_copy(update={"exempt": []}).matches(mesh, p)]
    return any(higher.scope.matches(mesh, p) for p in mine) or not mine


def _loosening(rule: Rule, lower: Policy, higher: Policy) -> list[str]:
    why = []
    if SEVERITIES.index(lower.severity) < SEVERITIES.index(higher.severity):
        why.append(f"severity {lower.severity} is below {higher.severity}")
    why += looser(rule, lower.params, higher.params)
    lower_deadline, higher_deadline = lower.deadline(), higher.deadline()
    if lower_deadline and (higher_deadline is None or lower_deadline > higher_deadline):
        why.append("its grace period ends later")
    return why
