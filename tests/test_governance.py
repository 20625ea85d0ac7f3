"""Governance end to end: loading policies at three levels, statuses over time, `policy apply`, `trustmesh
check` (text, json, junit, sarif, --changed-since), the build's policy gate, unfit products refused new
grants and flagged in queries and inboxes, and the demo's policy update.

Meshes come from meshfactory; a mutable clock drives effective dates and grace periods; the demo is built
once for the module by `trustmesh demo DIR --no-serve`.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from meshfactory import base_files, grant_product_inputs, person, write_files
from sqlalchemy import select, update
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.cli.render import console
from trustmesh.demo import policy_update
from trustmesh.descriptors import load_mesh
from trustmesh.errors import Forbidden, InvalidMesh, Problem
from trustmesh.governance import rules as rules_module
from trustmesh.governance.loader import load_policies
from trustmesh.governance.model import Policy, Violation
from trustmesh.governance.rules import Rule, rules
from trustmesh.metastore.schema import DatasetRow, VersionRow
from trustmesh.service import Workspace

runner = CliRunner()

SHOP, STATS = "alpha.shop-dp", "beta.stats-dp"
ITEMS, CHEAP, DAILY = "alpha.shop-dp.items", "alpha.shop-dp.cheap_items", "beta.stats-dp.daily_sales"
SHOP_DIR, STATS_DIR = "domains/alpha/products/shop-dp", "domains/beta/products/stats-dp"
GLOBAL = "governance/policies/standards.yaml"
SECTOR = "domains/beta/policies/transport.yaml"  # beta is the transport sector's Trusted Centre
DOMAIN = "domains/alpha/policies/alpha.yaml"
UNFIT, AT_RISK, COMPLIANT = "unfit for consumption", "at-risk", "compliant"

# Column descriptions of the base mesh: shop-dp's `name` columns have 9 characters ("The name."), stats-dp's
# shortest has 10 ("The items."); so columns-described fails shop-dp from min_length 10, stats-dp from 11.


def policy(pid: str, rule: str = "columns-described", **extra: Any) -> dict[str, Any]:
    return {"id": pid, "title": f"The {pid} policy", "rule": rule, **extra}


def described(pid: str = "gdo.described", min_length: int = 10, **extra: Any) -> dict[str, Any]:
    return policy(pid, params={"min_length": min_length}, **extra)


def files_with(extra: dict[str, Any]) -> dict[str, Any]:
    files = copy.deepcopy(base_files())
    files["mesh.yaml"]["people"].append(person("audrey", "auditor"))
    files.update(extra)
    return files


def loaded(root: Path, extra: dict[str, Any]) -> tuple[list[Policy], list[Problem]]:
    write_files(root, files_with(extra))
    mesh, _ = load_mesh(root)
    return load_policies(mesh)


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def workspaces() -> Iterator[list[Workspace]]:
    opened: list[Workspace] = []
    yield opened
    for ws in opened:
        ws.close()


@pytest.fixture
def mesh_at(tmp_path: Path, workspaces: list[Workspace]) -> Any:
    """mesh_at(files, clock=None, grants=True) → a Workspace on a new mesh folder, its clock the given one."""

    def make(files: dict[str, Any], clock: Clock | None = None, grants: bool = True) -> Workspace:
        root = write_files(tmp_path / f"mesh{len(workspaces)}", files)
        ws = Workspace.open(root, clock=clock) if clock else Workspace.open(root)
        workspaces.append(ws)
        if grants:
            grant_product_inputs(ws)
        return ws

    return make


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables printed wide enough that ids and messages are not folded."""
    monkeypatch.setattr(console, "width", 400)


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def apply(ws: Workspace, actor: str = "gdo") -> dict[str, Any]:
    """What `trustmesh policy apply --json` reports."""
    result = cli("policy", "apply", "--as", actor, "--json", "--mesh", str(ws.root))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def statuses(ws: Workspace) -> dict[str, str]:
    found, problems = ws.governance.evaluate(ws.mesh)
    assert not errors(problems), problems
    return {a: s.status for a, s in found.items()}


# == 1. loading ================================================================================================

def test_a_valid_policy_at_each_level(tmp_path: Path) -> None:
    policies, problems = loaded(tmp_path, {
        GLOBAL: described(severity="warning"),  # one policy per file ...
        SECTOR: {"policies": [policy("transport.owners", "owners-named", severity="error"),  # ... or a list
                              described("transport.described", 12, tightens="gdo.described")]},
        "domains/alpha/policies/alpha.yml": policy("alpha.names", "naming-convention", severity="info",
                                                   params={"column": "^[a-z_]+$"}, effective="2026-01-31",
                                                   graceDays=30),
    })
    assert problems == []
    by_id = {p.id: p for p in policies}
    assert list(by_id) == ["gdo.described", "alpha.names", "transport.owners", "transport.described"]
    gdo, owners, tight, names = (by_id[i] for i in ("gdo.described", "transport.owners", "transport.described",
                                                     "alpha.names"))
    assert (gdo.level, gdo.owner, gdo.file, gdo.scope.sectors, gdo.scope.domains) == \
        ("global", None, GLOBAL, [], [])
    assert gdo.params == {"min_length": 10} and gdo.severity == "warning" and gdo.version == 1
    # a lower level's scope is narrowed to its own sector or domain
    assert (owners.level, owners.owner, owners.scope.sectors) == ("sector", "beta", ["transport"])
    assert owners.params == {"roles": rules()["owners-named"].params().model_dump()["roles"]}
    assert (tight.tightens, tight.params) == ("gdo.described", {"min_length": 12})
    assert (names.level, names.owner, names.scope.domains, names.file) == \
        ("domain", "alpha", ["alpha"], "domains/alpha/policies/alpha.yml")
    assert names.effective == date(2026, 1, 31) and names.grace_days == 30
    assert names.deadline() == datetime(2026, 3, 2, tzinfo=UTC)
    assert names.params["column"] == "^[a-z_]+$"


def test_policy_list_shows_every_level(make_mesh: Any, wide_console: None) -> None:
    ws = make_mesh(files_with({GLOBAL: described(), SECTOR: policy("transport.owners", "owners-named"),
                               DOMAIN: policy("alpha.names", "naming-convention")}), grants=False)
    listed = cli("policy", "list", "--json", "--mesh", str(ws.root))
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert [(p["id"], p["level"], p["owner"]) for p in data["policies"]] == [
        ("gdo.described", "global", None), ("alpha.names", "domain", "alpha"), ("transport.owners", "sector", "beta")]
    assert data["problems"] == []
    text = cli("policy", "list", "--mesh", str(ws.root))
    assert text.exit_code == 0 and "sector (beta)" in text.output and "domain (alpha)" in text.output


BAD_INPUT = {
    "unknown rule": ({GLOBAL: policy("gdo.x", "no-such-rule")}, GLOBAL, "unknown rule 'no-such-rule'"),
    "parameter of the wrong type": ({GLOBAL: policy("gdo.x", params={"min_length": "long"})}, GLOBAL,
                                    "params.min_length: Input should be a valid integer"),
    "unknown parameter": ({GLOBAL: policy("gdo.x", params={"max_length": 3})}, GLOBAL,
                          "params.max_length: Extra inputs are not permitted"),
    "parameter out of range": ({GLOBAL: policy("gdo.x", params={"min_length": -1})}, GLOBAL,
                               "params.min_length: Input should be greater than or equal to 0"),
    "effective date in the wrong format": ({GLOBAL: policy("gdo.x", effective="31/01/2026")}, GLOBAL,
                                           "effective: Input should be a valid date"),
    "unknown severity": ({GLOBAL: policy("gdo.x", severity="fatal")}, GLOBAL, "severity: Input should be"),
    "unknown field": ({GLOBAL: policy("gdo.x", owner_email="x@example.org", graceDayz=3)}, GLOBAL,
                      "graceDayz: Extra inputs are not permitted"),
    "not a mapping": ({GLOBAL: {"policies": ["gdo.x"]}}, GLOBAL, "a policy is a mapping"),
    "duplicate id": ({GLOBAL: {"policies": [policy("gdo.x", "owners-named")]},
                      "governance/policies/uploads.yaml": described("gdo.x")}, "governance/policies/uploads.yaml",
                     "policy id gdo.x is also used in governance/policies/standards.yaml"),
    "sector policy naming another sector": (
        {SECTOR: policy("transport.x", "owners-named", scope={"sectors": ["transport", "health"]})}, SECTOR,
        "a sector policy of beta covers only the transport sector, not health"),
    "domain policy naming another domain": (
        {DOMAIN: policy("alpha.x", "owners-named", scope={"domains": ["beta"]})}, DOMAIN,
        "a policy of the alpha domain covers only alpha, not beta"),
    "tightens a missing policy": ({DOMAIN: described("alpha.x", 12, tightens="gdo.missing")}, DOMAIN,
                                  "policy alpha.x tightens gdo.missing, which does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_policy_input_is_an_error_naming_file_and_field(tmp_path: Path, case: str) -> None:
    extra, file, message = BAD_INPUT[case]
    _, problems = loaded(tmp_path, extra)
    found = [p for p in errors(problems) if message in p.message]
    assert found, f"no error with {message!r} in {problems}"
    assert found[0].file.endswith(file)
    assert all(p.fix for p in found)


def test_a_scope_that_matches_nothing_is_a_warning(tmp_path: Path) -> None:
    policies, problems = loaded(tmp_path, {GLOBAL: policy("gdo.x", "owners-named",
                                                          scope={"domains": ["alpha"], "kinds": ["aggregated"]})})
    [warning] = problems
    assert warning.severity == "warning" and "policy gdo.x's scope matches no product" in warning.message
    assert [p.id for p in policies] == ["gdo.x"]  # still loaded


def test_policy_problems_surface_in_validate_and_fail_check(make_mesh: Any) -> None:
    ws = make_mesh(files_with({GLOBAL: policy("gdo.x", "no-such-rule")}), grants=False)
    assert any("unknown rule 'no-such-rule'" in p.message for p in errors(ws.validate()))
    with pytest.raises(InvalidMesh):
        ws.governance.evaluate(ws.mesh)
    result = cli("check", "--format", "json", "--mesh", str(ws.root))
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and any("unknown rule" in p["message"] for p in report["problems"])


def test_a_scope_warning_alone_does_not_fail_check(make_mesh: Any) -> None:
    ws = make_mesh(files_with({GLOBAL: policy("gdo.x", "owners-named", scope={"domains": ["nowhere"]})}),
                   grants=False)
    result = cli("check", "--format", "json", "--mesh", str(ws.root))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [p["severity"] for p in report["problems"]] == ["warning"]


def test_lower_levels_may_tighten(tmp_path: Path) -> None:
    higher = described(severity="warning", effective="2026-03-01", graceDays=30)
    _, problems = loaded(tmp_path, {
        GLOBAL: higher,
        # implicitly: same rule, overlapping scope; higher severity, stricter parameter, earlier deadline
        SECTOR: described("transport.described", 11, severity="error", effective="2026-03-01", graceDays=10),
        # explicitly, and stricter than both; no grace at all
        DOMAIN: described("alpha.described", 12, severity="error", tightens="transport.described"),
    })
    assert problems == []


LOOSENING = {
    "lower severity": (described("transport.described", 10, severity="info"),
                       "severity info is below warning"),
    "looser parameter": (described("transport.described", 8, severity="warning"),
                         "min_length 8 is looser than 10"),
    "later grace deadline": (described("transport.described", 10, severity="warning", effective="2026-03-01",
                                       graceDays=60), "its grace period ends later"),
    "a binding date after the higher one's": (described("transport.described", 10, severity="warning",
                                                        effective="2026-05-01"), "its grace period ends later"),
}


@pytest.mark.parametrize("case", list(LOOSENING))
def test_lower_levels_may_not_loosen(tmp_path: Path, case: str) -> None:
    lower, why = LOOSENING[case]
    _, problems = loaded(tmp_path, {GLOBAL: described(severity="warning", effective="2026-03-01", graceDays=30),
                                    SECTOR: lower})
    [problem] = errors(problems)
    assert problem.file == SECTOR
    assert problem.message.startswith("policy transport.described (sector) would loosen policy gdo.described "
                                      f"(global, {GLOBAL})")
    assert why in problem.message
    assert "gdo.described" in problem.fix


def test_a_domain_may_not_loosen_its_sector_and_an_explicit_tightening_must_use_the_same_rule(
        tmp_path: Path) -> None:
    _, problems = loaded(tmp_path, {
        SECTOR: described("transport.described", 12),
        DOMAIN: {"policies": [described("alpha.described", 11),
                              policy("alpha.owners", "owners-named", tightens="transport.described")]},
    })
    messages = sorted(p.message for p in errors(problems))
    assert len(messages) == 2, messages
    assert messages[0].startswith("policy alpha.described (domain) would loosen policy transport.described (sector")
    assert "min_length 11 is looser than 12" in messages[0]
    assert messages[1].startswith("policy alpha.owners (domain) would loosen policy transport.described (sector")
    assert "it uses rule owners-named, not columns-described" in messages[1]
    # reported by `policy list` and failing `trustmesh check`, naming both policies
    listed = json.loads(cli("policy", "list", "--json", "--mesh", str(tmp_path)).stdout)
    assert sorted(p["message"] for p in listed["problems"]) == messages
    checked = cli("check", "--format", "json", "--mesh", str(tmp_path))
    assert checked.exit_code == 1
    assert any(p["message"] == messages[0] for p in json.loads(checked.stdout)["problems"])


def test_a_policy_of_another_scope_is_not_loosened(tmp_path: Path) -> None:
    """Same rule, but the higher policy covers none of the lower one's products: no conflict."""
    _, problems = loaded(tmp_path, {GLOBAL: described(scope={"domains": ["beta"]}),
                                    DOMAIN: described("alpha.described", 5, severity="info")})
    assert problems == []


def _boom(ctx: Any, product: Any, params: Any) -> list[Violation]:
    raise RuntimeError(f"cannot read {product.address}")


def test_a_custom_rule_that_raises_fails_its_own_policy_and_the_others_still_run(
        mesh_at: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_module, "_RULES", {**rules(), "explodes": Rule("explodes", "Always raises.", _boom)})
    ws = mesh_at(files_with({GLOBAL: {"policies": [
        policy("custom.explodes", "explodes", severity="warning"), described(),
        policy("gdo.owners", "owners-named")]}}), grants=False)
    found, problems = ws.governance.evaluate(ws.mesh)
    assert problems == []
    shop, stats = found[SHOP], found[STATS]
    for status in (shop, stats):
        assert status.policies == {"custom.explodes": 1, "gdo.described": 1, "gdo.owners": 1}
        [crash] = [f for f in status.findings if f.policy == "custom.explodes"]
        assert crash.message == f"rule explodes could not be evaluated: RuntimeError: cannot read {status.product}"
        assert crash.severity == "warning" and crash.fix
    assert shop.status == UNFIT and {f.policy for f in shop.findings} == {"custom.explodes", "gdo.described"}
    assert stats.status == COMPLIANT  # the crash is a warning of its policy; the others passed


# == 2. statuses over time =====================================================================================

def test_effective_date_and_grace_period(mesh_at: Any) -> None:
    clock = Clock(datetime(2026, 3, 9, 23, 59, tzinfo=UTC))
    ws = mesh_at(files_with({GLOBAL: described(effective="2026-03-10", graceDays=14)}), clock, grants=False)

    found, _ = ws.governance.evaluate(ws.mesh)  # before the effective date: not applied at all
    assert found[SHOP].status == COMPLIANT and found[SHOP].findings == [] and found[SHOP].policies == {}

    for now in (datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 23, 23, 59, tzinfo=UTC)):
        clock.now = now
        found, _ = ws.governance.evaluate(ws.mesh)
        shop = found[SHOP]
        assert shop.status == AT_RISK, now
        assert shop.deadline == "2026-03-24T00:00:00+00:00"
        assert shop.policies == {"gdo.described": 1}
        assert all(not f.binding and f.deadline == shop.deadline for f in shop.findings)
        assert shop.reasons and all(r.startswith("gdo.described (binding from 2026-03-24") for r in shop.reasons)
        assert found[STATS].status == COMPLIANT

    ws.governance.record(ws.mesh, found, "apply", "gdo", ws.governance.policies(ws.mesh)[0])
    stored = ws.governance.statuses()[SHOP]
    assert stored["status"] == AT_RISK and stored["deadline"] == "2026-03-24T00:00:00+00:00"

    clock.now = datetime(2026, 3, 24, tzinfo=UTC)  # the deadline: binding
    found, _ = ws.governance.evaluate(ws.mesh)
    assert found[SHOP].status == UNFIT and found[SHOP].deadline is None
    assert all(f.binding for f in found[SHOP].findings)
    assert any(r.startswith("gdo.described: column name of alpha.shop-dp") for r in found[SHOP].reasons)
    assert found[STATS].status == COMPLIANT


def test_a_warning_policy_failing_leaves_the_product_compliant(mesh_at: Any) -> None:
    ws = mesh_at(files_with({GLOBAL: described(severity="warning")}), Clock(datetime(2026, 3, 1, tzinfo=UTC)),
                 grants=False)
    found, _ = ws.governance.evaluate(ws.mesh)
    shop = found[SHOP]
    assert shop.status == COMPLIANT and shop.reasons == [] and shop.deadline is None
    assert shop.findings and {f.severity for f in shop.findings} == {"warning"}


def test_a_served_version_failing_error_checks_is_unfit(mesh_at: Any) -> None:
    ws = mesh_at(files_with({GLOBAL: policy("gdo.owners", "owners-named")}))
    assert ws.build().ok
    assert statuses(ws) == {SHOP: COMPLIANT, STATS: COMPLIANT}
    with ws.store.session() as session:
        row = session.scalars(select(VersionRow).where(VersionRow.dataset == ITEMS)).one()
        session.execute(update(VersionRow).where(VersionRow.id == row.id)
                        .values(quality={**(row.quality or {}), "failed_errors": 2}))
    found, _ = ws.governance.evaluate(ws.mesh)
    shop = found[SHOP]
    assert shop.status == UNFIT
    [gate] = shop.findings
    assert (gate.policy, gate.severity, gate.binding, gate.dataset) == ("platform:quality-gate", "error", True, ITEMS)
    assert shop.reasons == [f"platform:quality-gate: the served version of {ITEMS} failed 2 error-level quality "
                            "check(s)"]
    assert found[STATS].status == COMPLIANT


# == 3. policy apply ===========================================================================================

def test_policy_apply_reports_changes_audits_the_diff_and_keeps_history(mesh_at: Any, wide_console: None) -> None:
    ws = mesh_at(files_with({GLOBAL: described()}), grants=False)
    first = apply(ws)
    assert first["changed_policies"] == ["gdo.described"]
    assert first["changes"] == [{"policy": "gdo.described", "version": 1, "newly_failing": [SHOP], "fixed": []}]
    assert first["statuses"][SHOP]["status"] == UNFIT and first["statuses"][STATS]["status"] == COMPLIANT

    again = apply(ws)  # nothing changed
    assert again["changed_policies"] == [] and again["changes"] == []

    write_files(ws.root, {GLOBAL: described(min_length=11, version=2)})  # stricter: stats-dp fails too
    second = apply(ws)
    assert second["changed_policies"] == ["gdo.described"]
    assert second["changes"] == [{"policy": "gdo.described", "version": 2, "newly_failing": [STATS], "fixed": []}]
    assert second["summary"]["unfit for consumption"] == 2

    write_files(ws.root, {GLOBAL: described(min_length=5, version=3)})  # looser: both fixed
    text = cli("policy", "apply", "--as", "gdo", "--mesh", str(ws.root))
    assert text.exit_code == 0, text.output
    assert "policy gdo.described v3: 0 product(s) newly non-compliant, 2 fixed" in text.output
    assert "2 products: 2 compliant, 0 at-risk, 0 unfit for consumption" in text.output
    assert ws.governance.statuses()[SHOP]["status"] == COMPLIANT

    entries = ws.audit.log("audrey", type="policy.")
    assert [(e["type"], e["subject"], e["actor"], e["details"]["version"], e["details"]["was"])
            for e in reversed(entries)] == [("policy.changed", "gdo.described", "gdo", 1, None),
                                            ("policy.changed", "gdo.described", "gdo", 2, 1),
                                            ("policy.changed", "gdo.described", "gdo", 3, 2)]
    diff = entries[1]["details"]["diff"]  # v1 → v2
    assert diff == {"version": {"from": 1, "to": 2}, "params": {"from": {"min_length": 10}, "to": {"min_length": 11}}}
    assert entries[1]["details"]["file"] == GLOBAL
    assert ws.governance.applied_policies()["gdo.described"]["version"] == 3

    history = ws.governance.history(SHOP)
    assert [h["status"] for h in history] == [UNFIT, UNFIT, UNFIT, COMPLIANT]
    assert [h["failing"] for h in history] == [["gdo.described"]] * 3 + [[]]
    assert [h["status"] for h in ws.governance.history(STATS)] == [COMPLIANT, COMPLIANT, UNFIT, COMPLIANT]
    shown = cli("policy", "status", SHOP, "--json", "--mesh", str(ws.root))
    assert shown.exit_code == 0 and len(json.loads(shown.stdout)["history"]) == 4

    write_files(ws.root, {GLOBAL: None})  # a removed policy is audited too
    apply(ws)
    [removed] = ws.audit.log("audrey", type="policy.", limit=1)
    assert removed["subject"] == "gdo.described" and removed["details"]["removed"] is True


def test_raising_a_policy_from_warning_to_error_reports_newly_non_compliant_products(mesh_at: Any) -> None:
    ws = mesh_at(files_with({GLOBAL: described(severity="warning")}), grants=False)
    first = apply(ws)
    assert first["statuses"][SHOP]["status"] == COMPLIANT  # failing a warning policy is still compliant
    write_files(ws.root, {GLOBAL: described(severity="error", version=2)})
    second = apply(ws)
    assert second["statuses"][SHOP]["status"] == UNFIT
    assert second["changed_policies"] == ["gdo.described"]
    # shop-dp went from compliant to unfit because of gdo.described v2: the report must say so
    assert second["changes"] == [{"policy": "gdo.described", "version": 2, "newly_failing": [SHOP], "fixed": []}]


# == 4. trustmesh check ========================================================================================

def check(ws: Workspace, *args: str) -> Any:
    return cli("check", *args, "--mesh", str(ws.root))


def test_check_passes_on_a_compliant_mesh(make_mesh: Any, wide_console: None) -> None:
    ws = make_mesh(files_with({GLOBAL: {"policies": [policy("gdo.owners", "owners-named"),
                                                     described(min_length=5)]}}), grants=False)
    result = check(ws)
    assert result.exit_code == 0, result.output
    assert "passed: 2 product(s) — 2 compliant" in result.output
    report = json.loads(check(ws, "--format", "json").stdout)
    assert report["ok"] is True and all(s["findings"] == [] for s in report["products"].values())


def test_check_fails_on_a_binding_error(make_mesh: Any, wide_console: None) -> None:
    ws = make_mesh(files_with({GLOBAL: described()}), grants=False)
    result = check(ws)
    assert result.exit_code == 1, result.output
    assert "gdo.described" in result.output and "column name of alpha.shop-dp.items has a description of 9" \
        in result.output
    assert "FAILED: 2 product(s) — 1 compliant, 1 unfit for consumption" in result.output
    assert check(ws, STATS).exit_code == 0  # a selector: only stats-dp, which passes


def test_check_passes_when_the_failing_policy_is_in_grace(make_mesh: Any, wide_console: None) -> None:
    effective = datetime.now(UTC).date() - timedelta(days=1)
    deadline = effective + timedelta(days=30)
    ws = make_mesh(files_with({GLOBAL: described(effective=effective.isoformat(), graceDays=30)}), grants=False)
    result = check(ws)
    assert result.exit_code == 0, result.output
    assert "gdo.described" in result.output and f"error (from {deadline.isoformat()})" in result.output
    assert "1 at-risk" in result.output
    report = json.loads(check(ws, "--format", "json").stdout)
    assert report["ok"] is True
    shop = report["products"][SHOP]
    assert shop["status"] == AT_RISK and shop["deadline"].startswith(deadline.isoformat())
    assert shop["findings"] and all(not f["binding"] for f in shop["findings"])


def test_check_json_structure(make_mesh: Any) -> None:
    ws = make_mesh(files_with({GLOBAL: {"policies": [described(), policy("gdo.owners", "owners-named")]}}),
                   grants=False)
    result = check(ws, "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert set(report) == {"ok", "problems", "products"} and report["ok"] is False and report["problems"] == []
    assert list(report["products"]) == [SHOP, STATS]
    shop = report["products"][SHOP]
    assert set(shop) == {"product", "status", "reasons", "deadline", "findings", "policies"}
    assert shop["policies"] == {"gdo.described": 1, "gdo.owners": 1} and shop["status"] == UNFIT
    assert {(f["dataset"], f["column"]) for f in shop["findings"]} == {(ITEMS, "name"), (CHEAP, "name")}
    finding = shop["findings"][0]
    assert set(finding) == {"product", "policy", "policy_version", "rule", "severity", "level", "message", "dataset",
                            "column", "fix", "binding", "deadline", "file"}
    assert (finding["product"], finding["policy"], finding["rule"], finding["severity"], finding["level"],
            finding["binding"], finding["file"]) == (SHOP, "gdo.described", "columns-described", "error", "global",
                                                     True, GLOBAL)
    assert "description:" in finding["fix"]


def test_check_junit(make_mesh: Any, tmp_path: Path) -> None:
    ws = make_mesh(files_with({GLOBAL: {"policies": [described(), policy("gdo.owners", "owners-named"),
                                                     described("gdo.soft", 11, severity="warning")]}}),
                   grants=False)
    out = tmp_path / "report.xml"
    result = check(ws, "--format", "junit", "--output", str(out))
    assert result.exit_code == 1 and "wrote junit report" in result.output
    root = ET.fromstring(out.read_text(encoding="utf-8"))
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {SHOP, STATS}
    shop = suites[SHOP]
    assert (shop.get("tests"), shop.get("failures")) == ("3", "1")
    cases = {c.get("name"): c for c in shop.findall("testcase")}
    assert set(cases) == {"gdo.described", "gdo.owners", "gdo.soft"}
    assert all(c.get("classname") == SHOP for c in cases.values())
    failure = cases["gdo.described"].find("failure")
    assert failure is not None and "has a description of 9" in failure.get("message", "")
    assert "fix:" in (failure.text or "")
    assert cases["gdo.owners"].find("failure") is None
    assert cases["gdo.soft"].find("failure") is None  # a warning is reported, not failed
    assert "warning:" in (cases["gdo.soft"].findtext("system-out") or "")
    assert suites[STATS].get("failures") == "0"
    # on stdout, the same document
    printed = check(ws, "--format", "junit")
    assert ET.fromstring(printed.stdout.strip()).tag == "testsuites"


def test_check_sarif(make_mesh: Any) -> None:
    effective = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    ws = make_mesh(files_with({GLOBAL: {"policies": [
        described(), described("gdo.soft", 11, severity="warning"),
        described("gdo.later", 11, effective=effective, graceDays=30, scope={"domains": ["beta"]}),
        policy("gdo.unused", "owners-named", scope={"kinds": ["consumer-aligned"]})]}}), grants=False)
    result = check(ws, "--format", "sarif")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["version"] == "2.1.0" and "sarif" in doc["$schema"]
    [run] = doc["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "trustmesh" and driver["version"]
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids))
    assert {"gdo.described", "gdo.soft", "gdo.later", "validate"} <= set(rule_ids)  # validate: the scope warning
    for r in driver["rules"]:
        assert r["shortDescription"]["text"]
    results = run["results"]
    assert results
    for r in results:
        assert r["ruleId"] in rule_ids
        assert r["level"] in {"error", "warning", "note"}
        assert isinstance(r["message"]["text"], str) and r["message"]["text"]
        [location] = r["locations"]
        assert location["physicalLocation"]["artifactLocation"]["uri"]
    levels = {(r["ruleId"], r["level"]) for r in results}
    assert levels == {("validate", "warning"), ("gdo.described", "error"), ("gdo.soft", "warning"),
                      ("gdo.later", "warning")}  # in grace: reported, not an error
    described_results = [r for r in results if r["ruleId"] == "gdo.described"]
    assert {r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] for r in described_results} == {
        f"{ITEMS}.name", f"{CHEAP}.name"}
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == GLOBAL
               for r in described_results)
    assert all("— fix:" in r["message"]["text"] for r in described_results)


def test_check_rejects_an_unknown_format(make_mesh: Any) -> None:
    ws = make_mesh(files_with({}), grants=False)
    result = check(ws, "--format", "xml")
    assert result.exit_code != 0 and "junit" in result.output


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false",
                    *args], cwd=root, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_check_changed_since(make_mesh: Any) -> None:
    ws = make_mesh(files_with({GLOBAL: described(min_length=5)}), grants=False)
    git(ws.root, "init", "-q")
    git(ws.root, "add", "-A")
    git(ws.root, "commit", "-q", "-m", "first")

    def checked() -> list[str]:
        result = check(ws, "--changed-since", "HEAD", "--format", "json")
        assert result.exit_code == 0, result.output
        return list(json.loads(result.stdout)["products"])

    assert checked() == []  # nothing changed
    contract = ws.root / SHOP_DIR / "contracts" / "items.odcs.yaml"
    contract.write_text(contract.read_text(encoding="utf-8").replace("The price.", "The price, in dollars."),
                        encoding="utf-8")
    assert checked() == [SHOP]
    assert list(json.loads(check(ws, STATS, "--changed-since", "HEAD", "--format", "json").stdout)["products"]) \
        == []  # a selector and the changed set together
    git(ws.root, "commit", "-q", "-am", "the price described")
    assert checked() == []

    write_files(ws.root, {GLOBAL: described(min_length=6)})  # a policy changed: every product
    assert checked() == [SHOP, STATS]

    bad = check(ws, "--changed-since", "no-such-ref")
    assert bad.exit_code != 0 and "--changed-since no-such-ref" in bad.output


# == 5. the build's policy gate ================================================================================

def test_a_binding_error_holds_back_a_changed_products_new_version(mesh_at: Any) -> None:
    ws = mesh_at(files_with({}))
    assert ws.build().ok
    # both products now fail a binding policy (stats-dp's `items` has 10 characters); only stats-dp changes
    write_files(ws.root, {GLOBAL: described(min_length=11),
                          f"{STATS_DIR}/sql/daily_sales.sql": 'SELECT sold_on, count(*) AS items, round(sum(price), 2) '
                                                              'AS revenue\nFROM alpha."shop-dp".items GROUP BY sold_on\n'})
    result = ws.build()
    assert not result.ok
    by = {r.address: r for r in result.products}
    assert by[SHOP].status == "skipped"  # unchanged: not rebuilt, not failed
    stats = by[STATS]
    assert stats.status == "failed"
    assert "governance policy error(s) block publishing" in stats.message
    assert "previous version stays served" in stats.message
    assert stats.problems and all(p.message.startswith("policy gdo.described: ") for p in stats.problems)
    assert any("column items of beta.stats-dp.daily_sales" in p.message for p in stats.problems)
    with ws.store.session() as session:
        daily = session.get(DatasetRow, DAILY)
        assert daily is not None and daily.current_version == 1
        assert len(session.scalars(select(VersionRow).where(VersionRow.dataset == DAILY)).all()) == 1
    # the build recorded the statuses under the policies
    stored = ws.governance.statuses()
    assert stored[SHOP]["status"] == UNFIT and stored[STATS]["status"] == UNFIT

    # in grace, the same failure does not block
    effective = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    write_files(ws.root, {GLOBAL: described(min_length=11, effective=effective, graceDays=30)})
    again = ws.build()
    assert again.ok, again
    assert {r.address: r.status for r in again.products} == {SHOP: "skipped", STATS: "published"}
    assert ws.governance.statuses()[STATS]["status"] == AT_RISK


# == 6. unfit products get no new grants =======================================================================

def test_an_unfit_product_gets_no_new_grants_and_is_flagged(mesh_at: Any, wide_console: None) -> None:
    ws = mesh_at(files_with({}))
    assert ws.build().ok
    purpose = {"purpose": "Monthly sales statistics for the board", "purpose_category": "statistics", "days": 30}
    pending = ws.access.request("beta-dev", ITEMS, **purpose)
    assert pending["state"] == "pending" and "alpha-steward" in pending["awaiting"]
    granted = ws.access.request("beta-dev", CHEAP, **purpose)
    granted = ws.access.approve("alpha-steward", granted["id"], note="fine")
    assert granted["state"] == "approved"

    write_files(ws.root, {GLOBAL: described(scope={"domains": ["alpha"]})})
    report = apply(ws)
    assert report["statuses"][SHOP]["status"] == UNFIT

    with pytest.raises(Forbidden, match="unfit for consumption") as refused:
        ws.access.request("beta-owner", ITEMS, **purpose)
    assert "alpha.shop-dp is unfit for consumption" in str(refused.value)
    assert "gdo.described" in str(refused.value)
    with pytest.raises(Forbidden, match="unfit for consumption"):
        ws.access.approve("alpha-steward", pending["id"], note="fine")
    assert ws.access.show("beta-dev", pending["id"])["state"] == "pending"  # not decided

    result = ws.query("beta-dev", 'SELECT count(*) AS n FROM alpha."shop-dp".cheap_items')
    assert result.table.num_rows == 1  # its data is still read, with a warning
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("alpha.shop-dp is unfit for consumption: gdo.described")

    inbox = cli("access", "list", "--inbox", "--as", "alpha-steward", "--mesh", str(ws.root))
    assert inbox.exit_code == 0, inbox.output
    assert "alpha.shop-dp is unfit for consumption: gdo.described" in inbox.output
    assert pending["id"] in inbox.output
    listed = json.loads(cli("access", "list", "--inbox", "--as", "alpha-steward", "--json", "--mesh",
                            str(ws.root)).stdout)
    assert [(n["product"], n["status"]) for n in listed["notices"]] == [(SHOP, UNFIT)]
    other = json.loads(cli("access", "list", "--inbox", "--as", "beta-steward", "--json", "--mesh",
                           str(ws.root)).stdout)
    assert other["notices"] == []  # not beta's product

    write_files(ws.root, {GLOBAL: None})  # fixed: grants are made again
    apply(ws)
    assert ws.access.approve("alpha-steward", pending["id"], note="fine")["state"] == "approved"
    assert ws.query("beta-dev", 'SELECT count(*) AS n FROM alpha."shop-dp".cheap_items').warnings == []


# == 7. the demo ===============================================================================================

CARRIERS, ACTIVITY = "carriers.airlines-dp", "health.activity-dp"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, str, dict[str, Any]]]:
    """The demo built by `trustmesh demo DIR --no-serve`: its workspace, the command's output and the
    statuses as the command left them."""
    root = tmp_path_factory.mktemp("demo") / "mesh"
    result = runner.invoke(app, ["demo", str(root), "--no-serve"])
    assert result.exit_code == 0, result.output
    ws = Workspace.open(root)
    yield ws, result.output, ws.governance.statuses()
    ws.close()


def test_the_demo_statuses(demo: tuple[Workspace, str, dict[str, Any]]) -> None:
    ws, output, found = demo
    output = " ".join(output.split())  # as printed, wrapped at the console's width
    assert "policy transport.carrier-codes: 1 product(s) newly non-compliant (carriers.airlines-dp), 0 fixed" in output
    assert "governance: 8 compliant, 1 at-risk, 1 unfit for consumption" in output
    assert set(found) == set(ws.mesh.products) and len(found) == 10
    carriers = found[CARRIERS]
    assert carriers["status"] == UNFIT and carriers["deadline"] is None
    assert any(r.startswith("transport.carrier-codes: column carrier of carriers.airlines-dp.airlines is linked to "
                            "'carrier-code'") for r in carriers["reasons"])
    activity = found[ACTIVITY]
    deadline = date.today() - timedelta(days=30) + timedelta(days=60)
    assert activity["status"] == AT_RISK and activity["deadline"] == f"{deadline.isoformat()}T00:00:00+00:00"
    assert activity["reasons"] and all(r.startswith("gdo.pii-masking (binding from") for r in activity["reasons"])
    assert {a for a, s in found.items() if s["status"] == COMPLIANT} == set(found) - {CARRIERS, ACTIVITY}


def _restore_carrier_codes(ws: Workspace) -> None:
    """Back to the demo as `trustmesh demo` leaves it: the Trusted Centre's update in place and applied."""
    (ws.root / "domains" / "transport-tc" / "policies" / "carrier-codes.yaml").unlink(missing_ok=True)
    policy_update(ws.root)
    apply(ws, "ravi")
    assert ws.governance.statuses()[CARRIERS]["status"] == UNFIT


def test_the_demo_check_gates_the_unfit_product_only(demo: tuple[Workspace, str, dict[str, Any]]) -> None:
    ws = demo[0]
    _restore_carrier_codes(ws)
    unfit = cli("check", CARRIERS, "--format", "json", "--mesh", str(ws.root))
    assert unfit.exit_code == 1
    assert json.loads(unfit.stdout)["products"][CARRIERS]["status"] == UNFIT
    at_risk = cli("check", ACTIVITY, "--format", "json", "--mesh", str(ws.root))
    assert at_risk.exit_code == 0, at_risk.output
    assert json.loads(at_risk.stdout)["products"][ACTIVITY]["status"] == AT_RISK


def test_editing_a_demo_policy_and_applying_fixes_carriers(demo: tuple[Workspace, str, dict[str, Any]]) -> None:
    ws = demo[0]
    _restore_carrier_codes(ws)
    path = ws.root / "domains" / "transport-tc" / "policies" / "carrier-codes.yaml"
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace('carrier: "^carrier$"', 'carrier: "^carrier_of_record$"')
                    .replace("    rule: glossary-terms", "    version: 2\n    rule: glossary-terms"), encoding="utf-8")
    report = apply(ws, "ravi")
    assert report["changed_policies"] == ["transport.carrier-codes"]
    assert report["changes"] == [{"policy": "transport.carrier-codes", "version": 2, "newly_failing": [],
                                  "fixed": [CARRIERS]}]
    assert report["statuses"][CARRIERS]["status"] == COMPLIANT
    assert ws.governance.statuses()[ACTIVITY]["status"] == AT_RISK  # untouched
    path.write_text(original, encoding="utf-8")
    back = apply(ws, "ravi")
    assert back["changes"] == [{"policy": "transport.carrier-codes", "version": 1, "newly_failing": [CARRIERS],
                                "fixed": []}]


def test_removing_the_carrier_codes_policy_and_applying_fixes_carriers(
        demo: tuple[Workspace, str, dict[str, Any]], wide_console: None) -> None:
    ws = demo[0]
    _restore_carrier_codes(ws)
    (ws.root / "domains" / "transport-tc" / "policies" / "carrier-codes.yaml").unlink()
    result = cli("policy", "apply", "--as", "ravi", "--json", "--mesh", str(ws.root))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["statuses"][CARRIERS]["status"] == COMPLIANT
    assert report["summary"]["unfit for consumption"] == 0 and report["summary"]["at-risk"] == 1
    assert report["changed_policies"] == ["transport.carrier-codes"]
    # the report says what the removal did: carriers no longer fails transport.carrier-codes
    assert [(c["policy"], c["newly_failing"], c["fixed"]) for c in report["changes"]] == [
        ("transport.carrier-codes", [], [CARRIERS])]
