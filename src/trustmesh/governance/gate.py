"""The governance gate of a domain's CI: validation problems and policy findings, and whether they fail the change.

`Workspace.check` fills a `GateReport`; `trustmesh check` and `GET /api/v1/governance/check` render it as JSON,
JUnit XML (a suite per product, a case per applied policy) or SARIF 2.1.0 (a rule per policy, a result per
finding), which CI systems and code hosts show next to the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustmesh import __version__
from trustmesh.errors import Problem, fails

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FORMATS = ("text", "json", "junit", "sarif")


@dataclass(frozen=True)
class GateReport:
    """Every problem `validate` found, and each evaluated product's status (as `ProductStatus.to_dict`)."""

    problems: list[Problem]
    statuses: dict[str, dict[str, Any]]

    @property
    def findings(self) -> list[dict[str, Any]]:
        return [f for s in self.statuses.values() for f in s["findings"]]

    @property
    def failed(self) -> bool:
        """An error problem, or a binding error finding (a policy still in its grace period does not fail)."""
        return self.fails("error")

    def fails(self, fail_on: str) -> bool:
        """Whether the change fails at `fail_on` ("error", or "warning" to fail on warnings too); a finding of a
        policy still in its grace period never fails it."""
        return any(fails(p.severity, fail_on) for p in self.problems) or any(
            fails(f["severity"], fail_on) and f["binding"] for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.failed, "problems": [p.to_dict() for p in self.problems], "products": self.statuses}

    def junit(self) -> str:
        return junit(self.problems, self.statuses)

    def sarif(self) -> dict[str, Any]:
        return sarif(self.problems, self.findings)


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
