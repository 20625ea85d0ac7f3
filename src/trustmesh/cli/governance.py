"""`trustmesh check`, `trustmesh policy …` and `trustmesh report compliance`: governance from the terminal and CI."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer

from trustmesh.cli.access import AsOpt
from trustmesh.cli.common import FailOnOpt, JsonOpt, MeshOpt, fail_on_option, typer_app
from trustmesh.cli.render import console, print_json, print_problems, table
from trustmesh.errors import Problem, UsageError
from trustmesh.governance.gate import FORMATS
from trustmesh.service import USER_ENV, Workspace

policy_app = typer_app("Policies as code: list them, apply a change to every product, see statuses.")
report_app = typer_app("Reports for the governance office and Trusted Centres.")


def check(
    selector: Annotated[str | None, typer.Argument(help="Only these products: a domain, DOMAIN.PRODUCT, + for "
                                                        "upstream/downstream (as `build`). Default: all.")] = None,
    changed_since: Annotated[str | None, typer.Option(help="Only products with files changed since this git ref "
                                                           "(all of them when a policy changed), e.g. origin/main.")]
    = None,
    format: Annotated[str, typer.Option("--format", help="text, json, junit (JUnit XML) or sarif (SARIF 2.1.0).")]
    = "text",
    output: Annotated[Path | None, typer.Option(help="Write the report to this file.")] = None,
    fail_on: FailOnOpt = "error",
    mesh: MeshOpt = None,
) -> None:
    """Validate the mesh and run every applicable policy; exit 1 on any error (`--fail-on warning`: on any
    warning too) — the gate for a domain's CI.

    Findings name product, dataset, column, policy, severity and the fix. Errors of policies still in their
    grace period are reported (at-risk) but do not fail the check.

    Examples: `trustmesh check`, `trustmesh check --changed-since origin/main --format sarif --output trustmesh.sarif`
    """
    if format not in FORMATS:
        raise UsageError(f"--format {format!r} — fix: one of {', '.join(FORMATS)}")
    fail_on = fail_on_option(fail_on)
    ws = Workspace.open(mesh)
    gate = ws.check(selector, changed_since=changed_since)
    report: Any = (gate.junit() if format == "junit" else gate.sarif() if format == "sarif" else gate.to_dict())
    if output is not None:
        output.write_text(report if isinstance(report, str) else jsonlib.dumps(report, indent=2), encoding="utf-8")
        console.print(f"wrote {format} report to {output}", markup=False)
    elif format == "text":
        _print_text(gate.problems, gate.statuses, gate.findings, gate.fails(fail_on))
    else:
        print(report if isinstance(report, str) else jsonlib.dumps(report, indent=2))
    if gate.fails(fail_on):
        raise typer.Exit(1)


def _print_text(problems: list[Problem], statuses: dict[str, Any], findings: list[dict[str, Any]], failed: bool) -> None:
    print_problems(problems)
    if findings:
        console.print(table("policy findings", ["product", "where", "policy", "severity", "finding", "fix"],
                            [[f["product"], ".".join(x for x in (f["dataset"], f["column"]) if x) or "",
                              f["policy"], f["severity"] + ("" if f["binding"] else f" (from {str(f['deadline'])[:10]})"),
                              f["message"], f["fix"]] for f in findings]))
    if not statuses and any(p.severity == "error" for p in problems):
        errors = sum(p.severity == "error" for p in problems)
        console.print(f"[red]FAILED[/]: {errors} validation error(s); policies are evaluated once the mesh is valid",
                      highlight=False)
        return
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    console.print(("[red]FAILED[/]" if failed else "[green]passed[/]") + f": {len(statuses)} product(s) — "
                  + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), highlight=False)


@policy_app.command("list")
def policy_list(mesh: MeshOpt = None, json: JsonOpt = False) -> None:
    """Every policy of the mesh: id, version, level, rule, severity, scope, effective date and grace."""
    ws = Workspace.open(mesh)
    policies, problems = ws.governance.policies(ws.mesh)
    items = [p.model_dump(mode="json", by_alias=True) for p in policies]
    if json:
        print_json({"policies": items, "problems": [p.to_dict() for p in problems]})
        return
    console.print(table(None, ["id", "v", "level", "rule", "severity", "scope", "effective", "grace", "file"],
                        [[p.id, p.version, p.level + (f" ({p.owner})" if p.owner else ""), p.rule, p.severity,
                          p.scope.describe(),
                          p.effective or "", f"{p.grace_days} d" if p.grace_days else "", p.file] for p in policies]))
    print_problems(problems)


@policy_app.command("apply")
def policy_apply(as_: AsOpt = None, mesh: MeshOpt = None, json: JsonOpt = False) -> None:
    """Re-evaluate every product under the policies as they are now; store statuses, audit what changed.

    Reports, per changed policy, "policy X v2: N products newly non-compliant, M fixed".

    Example: `trustmesh policy apply --as gdo-admin`
    """
    import os

    ws = Workspace.open(mesh)
    actor = as_ or os.environ.get(USER_ENV)
    if actor:
        ws.access.principal(actor)  # a person named must exist; without one, the repo's operator applies
    current = ws.mesh
    report = ws.governance.apply(current, actor or "trustmesh")
    if json:
        print_json(report)
        return
    print_problems([Problem(**p) for p in report["problems"]])
    policies, _ = ws.governance.policies(current)
    by_id = {p.id: p for p in policies}
    for change in report["changes"]:
        policy = by_id.get(change["policy"])
        console.print(f"policy {change['policy']} " + (f"v{policy.version}" if policy else "(removed)") + ": "
                      f"{len(change['newly_failing'])} product(s) newly non-compliant, {len(change['fixed'])} fixed"
                      + (f" ({', '.join(change['newly_failing'])})" if change["newly_failing"] else ""), markup=False)
    if not report["changes"]:
        console.print("no product changed compliance", markup=False)
    s = report["summary"]
    console.print(f"{s['products']} products: {s['compliant']} compliant, {s['at-risk']} at-risk, "
                  f"{s['unfit for consumption']} unfit for consumption", markup=False)


@policy_app.command("status")
def policy_status(
    product: Annotated[str | None, typer.Argument(help="A product address (default: every product).")] = None,
    mesh: MeshOpt = None, json: JsonOpt = False,
) -> None:
    """Products' stored governance status: compliant, at-risk (with the deadline) or unfit for consumption."""
    ws = Workspace.open(mesh)
    if product:
        one = ws.governance.product_status(product)
        if json:
            print_json(one)
            return
        statuses = {one["product"]: one}
    else:
        statuses = ws.governance.statuses()
        if json:
            print_json(statuses)
            return
    console.print(table(None, ["product", "status", "deadline", "reasons"],
                        [[a, s["status"], (s["deadline"] or "")[:10], "; ".join(s["reasons"])]
                         for a, s in sorted(statuses.items())]))


@report_app.command("compliance")
def report_compliance(
    sector: Annotated[str | None, typer.Option(help="Only this sector.")] = None,
    domain: Annotated[str | None, typer.Option(help="Only this domain.")] = None,
    format: Annotated[str, typer.Option("--format", help="md, html or json.")] = "md",
    output: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
    mesh: MeshOpt = None,
) -> None:
    """Compliance by domain and policy, trends, worst offenders and unfit products (from the stored statuses).

    Example: `trustmesh report compliance --sector transport --format html --output compliance.html`
    """
    from trustmesh.governance.report import compliance_report, render_html, render_markdown

    if format not in ("md", "html", "json"):
        raise UsageError(f"--format {format!r} — fix: md, html or json")
    ws = Workspace.open(mesh)
    data = compliance_report(ws.mesh, ws.governance, sector=sector, domain=domain)
    text = (jsonlib.dumps(data, indent=2, default=str) if format == "json"
            else render_html(data) if format == "html" else render_markdown(data))
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", markup=False)
    else:
        print(text)
