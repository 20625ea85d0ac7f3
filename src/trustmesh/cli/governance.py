"""`trustmesh check`, `trustmesh policy …` and `trustmesh report compliance`: governance from the terminal and CI."""

from __future__ import annotations

import json as jsonlib
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from trustmesh import __version__
from trustmesh.cli.access import AsOpt
from trustmesh.cli.common import JsonOpt, MeshOpt, typer_app
from trustmesh.cli.render import console, print_json, print_problems, table
from trustmesh.errors import Problem, UsageError
from trustmesh.service import USER_ENV, Workspace

policy_app = typer_app("Policies as code: list them, apply a change to every product, see statuses.")
report_app = typer_app("Reports for the governance office and Trusted Centres.")
FORMATS = ("text", "json", "junit", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def changed_products(ws: Workspace, ref: str) -> list[str] | None:
    """Products with a file changed since the git ref; None when a policy or mesh.yaml changed (check all)."""
    try:
        out = subprocess.run(["git", "diff", "--name-only", ref, "--", "."], cwd=ws.root, capture_output=True,
                             text=True, check=True).stdout
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ws.root, capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise UsageError(f"--changed-since {ref}: git could not compare ({detail.strip()[:200]}) — fix: run inside the "
                         "mesh's git checkout, with the ref fetched") from exc
    paths = [(Path(top) / line).resolve() for line in out.splitlines() if line.strip()]
    mesh = ws.mesh
    rel = [p.relative_to(ws.root) for p in paths if p.is_relative_to(ws.root)]
    if any(p.parts[:1] == ("governance",) or str(p) == "mesh.yaml" or "policies" in p.parts for p in rel):
        return None
    hit = []
    for address, product in mesh.products.items():
        folder = product.folder.resolve()
        domain_file = (ws.root / "domains" / product.domain / "domain.yaml").resolve()
        if any(p.is_relative_to(folder) or p == domain_file for p in paths):
            hit.append(address)
    return sorted(hit)


def check(
    selector: Annotated[str | None, typer.Argument(help="Only these products: a domain, DOMAIN.PRODUCT, + for "
                                                        "upstream/downstream (as `build`). Default: all.")] = None,
    changed_since: Annotated[str | None, typer.Option(help="Only products with files changed since this git ref "
                                                           "(all of them when a policy changed), e.g. origin/main.")]
    = None,
    format: Annotated[str, typer.Option("--format", help="text, json, junit (JUnit XML) or sarif (SARIF 2.1.0).")]
    = "text",
    output: Annotated[Path | None, typer.Option(help="Write the report to this file.")] = None,
    mesh: MeshOpt = None,
) -> None:
    """Validate the mesh and run every applicable policy; exit 1 on any error — the gate for a domain's CI.

    Findings name product, dataset, column, policy, severity and the fix. Errors of policies still in their
    grace period are reported (at-risk) but do not fail the check.

    Examples: `trustmesh check`, `trustmesh check --changed-since origin/main --format sarif --output trustmesh.sarif`
    """
    if format not in FORMATS:
        raise UsageError(f"--format {format!r} — fix: one of {', '.join(FORMATS)}")
    from trustmesh.plan import select

    ws = Workspace.open(mesh)
    problems = ws.validate()
    errors = [p for p in problems if p.severity == "error"]
    statuses: dict[str, Any] = {}
    if not errors:
        current = ws.mesh
        chosen = select(current, selector)
        if changed_since:
            changed = changed_products(ws, changed_since)
            chosen = [a for a in chosen if changed is None or a in changed]
        result, _ = ws.governance.evaluate(current, chosen)  # policy problems are among validate's already
        statuses = {a: s.to_dict() for a, s in result.items()}
    findings = [f for s in statuses.values() for f in s["findings"]]
    failed = bool([p for p in problems if p.severity == "error"]) or any(
        f["severity"] == "error" and f["binding"] for f in findings)
    report = _render(format, problems, statuses, findings, failed)
    if output is not None:
        output.write_text(report if isinstance(report, str) else jsonlib.dumps(report, indent=2), encoding="utf-8")
        console.print(f"wrote {format} report to {output}", markup=False)
    elif format == "text":
        _print_text(problems, statuses, findings, failed)
    else:
        print(report if isinstance(report, str) else jsonlib.dumps(report, indent=2))
    if failed:
        raise typer.Exit(1)


def _render(format: str, problems: list[Problem], statuses: dict[str, Any], findings: list[dict[str, Any]],
            failed: bool) -> Any:
    if format == "json" or format == "text":
        return {"ok": not failed, "problems": [p.to_dict() for p in problems], "products": statuses}
    if format == "junit":
        return junit(problems, statuses)
    return sarif(problems, findings)


def _print_text(problems: list[Problem], statuses: dict[str, Any], findings: list[dict[str, Any]], failed: bool) -> None:
    print_problems(problems)
    if findings:
        console.print(table("policy findings", ["product", "where", "policy", "severity", "finding", "fix"],
                            [[f["product"], ".".join(x for x in (f["dataset"], f["column"]) if x) or "",
                              f["policy"], f["severity"] + ("" if f["binding"] else f" (from {str(f['deadline'])[:10]})"),
                              f["message"], f["fix"]] for f in findings]))
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    console.print(("[red]FAILED[/]" if failed else "[green]passed[/]") + f": {len(statuses)} product(s) — "
                  + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), highlight=False)


def junit(problems: list[Problem], statuses: dict[str, Any]) -> str:
    """JUnit XML: a suite per product, a case per applied policy (failed when it has error findings)."""
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name="trustmesh check")
    if problems:
        suite = ET.SubElement(root, "testsuite", name="validate", tests=str(len(problems)),
                              failures=str(sum(p.severity == "error" for p in problems)))
        for p in problems:
            case = ET.SubElement(suite, "testcase", classname="validate", name=p.location())
            if p.severity == "error":
                ET.SubElement(case, "failure", message=p.message).text = str(p)
    for address, status in statuses.items():
        by_policy: dict[str, list[dict[str, Any]]] = {pid: [] for pid in status["policies"]}
        for f in status["findings"]:
            by_policy.setdefault(f["policy"], []).append(f)
        fails = sum(1 for fs in by_policy.values() if any(f["severity"] == "error" and f["binding"] for f in fs))
        suite = ET.SubElement(root, "testsuite", name=address, tests=str(len(by_policy)), failures=str(fails))
        for policy, fs in sorted(by_policy.items()):
            case = ET.SubElement(suite, "testcase", classname=address, name=policy)
            blocking = [f for f in fs if f["severity"] == "error" and f["binding"]]
            if blocking:
                failure = ET.SubElement(case, "failure", message=blocking[0]["message"])
                failure.text = "\n".join(f"{f['message']} — fix: {f['fix']}" for f in blocking)
            elif fs:
                ET.SubElement(case, "system-out").text = "\n".join(f"{f['severity']}: {f['message']}" for f in fs)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def sarif(problems: list[Problem], findings: list[dict[str, Any]]) -> dict[str, Any]:
    """SARIF 2.1.0: one run, a rule per policy, a result per finding or validation problem."""
    levels = {"error": "error", "warning": "warning", "info": "note"}
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for p in problems:
        rules.setdefault("validate", {"id": "validate", "shortDescription": {"text": "The mesh validates"}})
        location: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": p.file}}}
        if p.line:
            location["physicalLocation"]["region"] = {"startLine": p.line}
        results.append({"ruleId": "validate", "level": levels.get(p.severity, "error"),
                        "message": {"text": str(p)}, "locations": [location]})
    for f in findings:
        rules.setdefault(f["policy"], {"id": f["policy"], "name": f["rule"],
                                       "shortDescription": {"text": f"{f['rule']} ({f['level']} policy)"},
                                       "properties": {"version": f["policy_version"]}})
        text = f["message"] + (f" — fix: {f['fix']}" if f["fix"] else "")
        results.append({
            "ruleId": f["policy"], "level": levels.get(f["severity"], "warning") if f["binding"] else "warning",
            "message": {"text": text},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": f["file"] or "mesh.yaml"}},
                           "logicalLocations": [{"fullyQualifiedName": ".".join(x for x in (
                               f["product"] if not f["dataset"] else f["dataset"], f["column"]) if x),
                               "kind": "member" if f["column"] else "module"}]}],
            "properties": {"product": f["product"], "dataset": f["dataset"], "column": f["column"],
                           "binding": f["binding"], "deadline": f["deadline"]}})
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "trustmesh", "version": __version__, "rules": list(rules.values())}},
        "results": results}]}


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
                          ", ".join(f"{k}={','.join(v)}" for k, v in p.scope.model_dump().items() if v) or "all",
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
    actor = as_ or os.environ.get(USER_ENV) or "trustmesh"
    current = ws.mesh
    statuses, problems = ws.governance.evaluate(current)
    policies, _ = ws.governance.policies(current)
    report = ws.governance.record(current, statuses, "apply", actor, policies)
    if json:
        print_json({**report, "statuses": {a: s.to_dict() for a, s in statuses.items()},
                    "problems": [p.to_dict() for p in problems]})
        return
    print_problems(problems)
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
    statuses = ws.governance.statuses()
    if product:
        from trustmesh.descriptors.addresses import normalise_product_address

        product = normalise_product_address(product)
        statuses = {product: statuses[product]} if product in statuses else {}
        if not statuses:
            raise UsageError(f"no status for {product} yet — fix: `trustmesh policy apply` evaluates every product")
    if json:
        print_json(statuses if not product else {**statuses[product], "history": ws.governance.history(product)})
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
