"""Trust between domains in the descriptors: who may declare a person, and YAML bounded before it is parsed.

A person is declared once in the whole mesh; a domain declares only its own people, with roles in itself,
and never their clearance or agency (the governance office sets those in mesh.yaml). A descriptor is refused,
with its file, line and fix, when it is too large, nests too deep, or its aliases expand too far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from meshfactory import ITEMS_CSV, METASTORE_TIER, base_files, column, person, write_files
from typer.testing import CliRunner

from trustmesh.access.model import Directory
from trustmesh.cli import app
from trustmesh.descriptors import load_mesh
from trustmesh.errors import InvalidMesh
from trustmesh.service import Workspace
from trustmesh.yamlfile import MAX_ALIAS_NODES, MAX_BYTES, MAX_DEPTH, load_yaml

pytestmark = pytest.mark.skipif(METASTORE_TIER == "postgresql",
                                reason="what a descriptor may declare does not depend on the metastore; these run once, on SQLite")

runner = CliRunner()
ALPHA = "domains/alpha/domain.yaml"
BETA = "domains/beta/domain.yaml"
SHOP = "domains/alpha/products/shop-dp/product.yaml"


def validate(root: Path) -> list[dict[str, Any]]:
    """`trustmesh validate --json`: it must fail, and every problem it reports is returned."""
    result = runner.invoke(app, ["validate", "--mesh", str(root), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["ok"] is False
    return list(report["problems"])


def mesh_folder(tmp_path: Path, files: dict[str, Any]) -> Path:
    return write_files(tmp_path / "mesh", files)


def line_text(root: Path, problem: dict[str, Any]) -> str:
    assert problem["line"] is not None, problem
    return (root / problem["file"]).read_text(encoding="utf-8").splitlines()[problem["line"] - 1]


def only(problems: list[dict[str, Any]], words: str) -> dict[str, Any]:
    found = [p for p in problems if words in p["message"]]
    assert len(found) == 1, (words, problems)
    return found[0]


# -- a person is declared once ----------------------------------------------------------------------------


def test_a_domain_cannot_redeclare_another_domains_person(tmp_path: Path) -> None:
    """The finding: beta declares alpha's data owner with its own email, top-secret clearance and agency."""
    files = base_files()
    impostor = person("alpha-owner", "data-owner")
    impostor.update(email="owner@beta.example.gov.sg", clearance="top-secret", attributes={"agency": "alpha"})
    files[BETA]["people"].append(impostor)
    root = mesh_folder(tmp_path, files)

    problems = validate(root)
    again = only(problems, "already declared")
    assert again["file"] == BETA and again["path"] == "people[alpha-owner].id"
    assert f"{ALPHA}, line " in again["message"] and "declared once in the whole mesh" in again["message"]
    assert "id: alpha-owner" in line_text(root, again)
    assert "remove this entry" in again["fix"]
    clearance = only(problems, "cannot set a person's clearance")
    assert clearance["file"] == BETA and "clearance: top-secret" in line_text(root, clearance)
    assert "access.clearances" in clearance["fix"] and "governance office" in clearance["fix"]
    agency = only(problems, "cannot set a person's agency")
    assert agency["file"] == BETA and agency["path"] == "people[alpha-owner].attributes.agency"
    assert "access.agencies" in agency["fix"]

    with pytest.raises(InvalidMesh, match="already declared"):
        load_mesh(root)


def test_the_directory_never_picks_one_of_two_declarations(tmp_path: Path) -> None:
    files = base_files()
    files[BETA]["people"].append({**person("alpha-owner", "data-owner"), "email": "someone@beta.example.gov.sg"})
    mesh, problems = load_mesh(mesh_folder(tmp_path, files), strict=False)
    assert any("already declared" in p.message for p in problems)
    with pytest.raises(InvalidMesh) as refused:
        Directory.from_mesh(mesh)
    [problem] = refused.value.problems
    assert problem.file == BETA and ALPHA in problem.message


def test_a_person_of_mesh_yaml_cannot_be_declared_by_a_domain_too(tmp_path: Path) -> None:
    files = base_files()
    files[ALPHA]["people"].append(person("gdo", "developer"))
    problem = only(validate(mesh_folder(tmp_path, files)), "already declared")
    assert problem["file"] == ALPHA and "mesh.yaml, line " in problem["message"]


@pytest.mark.parametrize("email, clash", [
    ("alpha-owner@example.gov.sg", "already alpha-owner's"),
    ("ALPHA-Owner@Example.gov.sg", "already alpha-owner's"),  # mail is delivered whatever the letter case
])
def test_an_email_names_one_person(tmp_path: Path, email: str, clash: str) -> None:
    files = base_files()
    files[BETA]["people"].append({**person("beta-analyst", "developer"), "email": email})
    root = mesh_folder(tmp_path, files)
    problem = only(validate(root), clash)
    assert problem["file"] == BETA and problem["path"] == "people[beta-analyst].email"
    assert ALPHA in problem["message"] and email in line_text(root, problem)
    assert problem["fix"]


# -- a domain declares its own people, in its own roles ---------------------------------------------------


def test_a_domain_cannot_set_clearance_or_agency(tmp_path: Path) -> None:
    files = base_files()
    files[ALPHA]["people"][2]["clearance"] = "secret"
    files[BETA]["people"][0]["attributes"] = {"agency": "alpha", "team": "analytics"}
    files[BETA]["people"][1]["attributes"] = {"clearance": "top-secret"}
    root = mesh_folder(tmp_path, files)
    problems = validate(root)
    clearance = only(problems, "(alpha-dev: secret)")
    assert clearance["file"] == ALPHA and clearance["path"] == "people[alpha-dev].clearance"
    assert "clearance: secret" in line_text(root, clearance)
    assert "alpha-dev: secret" in clearance["fix"] and "mesh.yaml" in clearance["fix"]
    agency = only(problems, "agency (beta-owner")
    assert agency["file"] == BETA and "agency: alpha" in line_text(root, agency)
    hidden = only(problems, "clearance (beta-steward")
    assert hidden["path"] == "people[beta-steward].attributes.clearance"
    assert not [p for p in problems if "team" in p["message"]]  # other attributes are the domain's own


def test_a_domain_gives_only_its_own_roles(tmp_path: Path) -> None:
    files = base_files()
    files[ALPHA]["people"][2]["roles"].append("auditor")
    files[BETA]["people"][0]["roles"].append("governance-admin")
    files[BETA]["people"][1]["roles"].append("data-stewart")
    files["mesh.yaml"]["people"].append(person("roving-owner", "data-owner"))
    root = mesh_folder(tmp_path, files)
    problems = validate(root)
    auditor = only(problems, "auditor is a mesh-wide role")
    assert auditor["file"] == ALPHA and auditor["path"] == "people[alpha-dev].roles[2]"
    assert "mesh.yaml" in auditor["fix"]
    admin = only(problems, "governance-admin is a mesh-wide role")
    assert admin["file"] == BETA
    typo = only(problems, "unknown role 'data-stewart'")
    assert "data-domain-steward" in typo["fix"]
    homeless = only(problems, "data-owner is a domain role")
    assert homeless["file"] == "mesh.yaml" and "domain.yaml" in homeless["fix"]
    assert "data-owner" in line_text(root, homeless)


# -- the governance office sets clearance and agency in mesh.yaml -----------------------------------------


def test_mesh_yaml_sets_clearance_and_agency_of_a_domains_people(make_mesh: Any) -> None:
    files = base_files()
    files["mesh.yaml"]["access"] = {"defaultClearance": "official-closed",
                                    "clearances": {"alpha-owner": "secret"}, "agencies": {"beta-dev": "alpha"}}
    files["mesh.yaml"]["people"][0].update(clearance="top-secret", attributes={"agency": "gdo"})
    ws = make_mesh(files, grants=False)
    assert [p for p in ws.validate() if p.severity == "error"] == []
    people = ws.directory().principals
    assert (people["alpha-owner"].clearance, people["alpha-owner"].domain) == ("secret", "alpha")
    assert (people["beta-dev"].clearance, people["beta-dev"].domain) == (None, "alpha")
    assert (people["gdo"].clearance, people["gdo"].domain) == ("top-secret", "gdo")
    directory = ws.directory()
    assert directory.clearance_rank(people["beta-dev"]) == directory.rank("official-closed")
    assert directory.clearance_rank(people["alpha-owner"]) == directory.rank("secret")


def test_the_agency_governance_sets_is_the_one_a_row_filter_binds(make_mesh: Any) -> None:
    """A domain cannot move its people into another agency's rows; mesh.yaml can, and the query shows it."""
    files = base_files()
    shop = "domains/alpha/products/shop-dp"
    lines = ITEMS_CSV.splitlines()
    files[f"{shop}/data/items.csv"] = lines[0] + ",region\n" + "".join(
        f"{line},{agency}\n" for line, agency in zip(lines[1:], ["beta", "gamma", "gamma"], strict=True))
    files[f"{shop}/sql/items.sql"] = "SELECT item_id, name, price, sold_on, region FROM raw_items\n"
    schema = files[f"{shop}/contracts/items.odcs.yaml"]["schema"][0]
    schema["properties"].append(column("region", "string"))
    schema["customProperties"] = [{"property": "rowFilter", "value": "region = {agency}"}]
    files[BETA]["people"].append(person("beta-liaison", "developer"))
    files["mesh.yaml"]["access"] = {"agencies": {"beta-liaison": "gamma"}}
    ws = make_mesh(files)
    assert ws.build().ok
    rows = {}
    for who in ("beta-dev", "beta-liaison"):
        request = ws.access.request(who, "alpha.shop-dp.items", purpose="Quarterly sales report to the Ministry",
                                    purpose_category="statistics", days=30)
        while request["state"] == "pending":
            request = ws.access.approve(request["awaiting"][0], request["id"], note="purpose reviewed")
        assert request["state"] == "approved"
        result = ws.query(who, 'SELECT item_id, region FROM alpha."shop-dp".items ORDER BY item_id')
        rows[who] = [(r["item_id"], r["region"]) for r in result.table.to_pylist()]
    assert rows == {"beta-dev": [(1, "beta")], "beta-liaison": [(2, "gamma"), (3, "gamma")]}

    liaison = next(p for p in files[BETA]["people"] if p["id"] == "beta-liaison")
    liaison["attributes"] = {"agency": "gamma"}
    del files["mesh.yaml"]["access"]
    write_files(ws.root, {BETA: files[BETA], "mesh.yaml": files["mesh.yaml"]})
    assert only(validate(ws.root), "cannot set a person's agency")["file"] == BETA
    reopened = Workspace.open(ws.root)
    try:
        with pytest.raises(InvalidMesh, match="cannot set a person's agency"):
            reopened.query("beta-liaison", 'SELECT item_id FROM alpha."shop-dp".items')
    finally:
        reopened.close()


def test_mesh_yaml_settings_name_a_domains_people_and_real_levels(tmp_path: Path) -> None:
    files = base_files()
    files["mesh.yaml"]["access"] = {"clearances": {"alpha-ownr": "secret", "gdo": "secret", "beta-dev": "sekret"},
                                    "agencies": {"nobody": "alpha"}}
    root = mesh_folder(tmp_path, files)
    problems = validate(root)
    typo = only(problems, "'alpha-ownr', who is not declared")
    assert typo["file"] == "mesh.yaml" and typo["fix"] == "did you mean 'alpha-owner'?"
    assert "alpha-ownr" in line_text(root, typo)
    own_entry = only(problems, "names gdo, who is declared in mesh.yaml")
    assert "own entry" in own_entry["fix"]
    level = only(problems, "'sekret' is not a classification level")
    assert level["path"] == "access.clearances.beta-dev" and "secret" in level["fix"]
    only(problems, "'nobody', who is not declared")


# -- YAML is bounded in size and cost before it is parsed -------------------------------------------------


def alias_bomb(depth: int = 6, width: int = 10) -> str:
    """A valid-looking domain.yaml (~1.2 KB) whose person's free-form attributes expand to 10**6 values."""
    anchors = ['      x0: &x0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, depth + 1):
        anchors.append(f"      x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * width) + "]")
    return "\n".join([
        "name: beta", "kind: trusted-centre", "sector: transport", "people:",
        "  - {id: beta-owner, name: Beta Owner, email: beta-owner@example.gov.sg, roles: [data-owner]}",
        "  - {id: beta-steward, name: Beta Steward, email: beta-steward@example.gov.sg, roles: [data-domain-steward]}",
        "  - id: beta-dev", "    name: Beta Dev", "    roles: [developer, data-product-owner]", "    attributes:",
        *anchors, "", ""])


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    text = alias_bomb()
    assert len(text.encode()) < 1300
    files = base_files()
    files[BETA] = text
    root = mesh_folder(tmp_path, files)
    problem = only(validate(root), "alias budget")
    assert problem["file"] == BETA and f"{MAX_ALIAS_NODES:,}" in problem["message"]
    assert "&x" in line_text(root, problem)
    assert "fewer" in problem["fix"]


def test_aliases_within_the_budget_still_load(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text("base: &base {format: csv, options: {header: true}}\n"
                    "ports:\n  - {<<: *base, name: a}\n  - *base\n", encoding="utf-8")
    doc, problem = load_yaml(path)
    assert problem is None and doc is not None
    assert doc.data["ports"] == [{"format": "csv", "options": {"header": True}, "name": "a"},
                                 {"format": "csv", "options": {"header": True}}]
    assert doc.line_of(["ports", 1, "options", "header"]) == 1  # an alias's values point at the anchor


@pytest.mark.parametrize("text, words, line", [
    ("a: &x [1, *x]\n", "refers to the value that contains it", 1),
    ("a: 1\nb: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", f"more than the {MAX_DEPTH}", 2),
    ("a0: &a0 {k: 1}\n" + "".join(f"a{i}: &a{i} {{<<: [" + ", ".join([f"*a{i - 1}"] * 10) + "]}\n"
                                  for i in range(1, 8)), "alias budget", 7),  # merge keys repeat too
    ("a: 1\nsince: 2024-13-45\n", "month must be in 1..12", 2),
    ("a: 1\nrows: " + "9" * 5000 + "\n", "digits", 2),
])
def test_yaml_that_costs_more_than_its_text_is_a_problem_with_its_line(tmp_path: Path, text: str, words: str,
                                                                       line: int) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    doc, problem = load_yaml(path, "x.yaml")
    assert doc is None and problem is not None
    assert words in problem.message and problem.line == line and problem.file == "x.yaml"
    assert problem.fix


def test_an_oversized_descriptor_is_refused_unread(tmp_path: Path) -> None:
    files = base_files()
    files[SHOP]["description"]["usage"] = "x" * MAX_BYTES
    files[BETA]["people"].append({**person("alpha-owner", "developer"), "email": "other@example.gov.sg"})
    root = mesh_folder(tmp_path, files)
    problems = validate(root)
    big = only(problems, "larger than")
    assert big["file"] == SHOP and f"{MAX_BYTES // 2**20} MB" in big["message"] and big["fix"]
    assert only(problems, "already declared")["file"] == BETA  # and every other problem, at once


def test_yaml_read_from_a_device_stops_at_the_bound(tmp_path: Path) -> None:
    zero = Path("/dev/zero")
    if not zero.exists():
        pytest.skip("no /dev/zero on this system")
    doc, problem = load_yaml(zero, "contracts/endless.odcs.yaml")
    assert doc is None and problem is not None and "larger than" in problem.message

def test_a_contract_nesting_object_columns_too_deep_is_refused_before_the_schema_check(make_mesh: Any) -> None:
    """Each nested level triples the cost of the ODCS schema check: 12 levels would stall validate for hours."""
    files = base_files()
    contract = files["domains/alpha/products/shop-dp/contracts/items.odcs.yaml"]
    inner: dict[str, Any] = {"name": "leaf", "logicalType": "string"}
    for level in range(12):
        inner = {"name": f"level{level}", "logicalType": "object", "properties": [inner]}
    contract["schema"][0]["properties"].append(inner)
    problems = make_mesh(files, grants=False).validate()
    assert any("nested 13 levels deep" in p.message and p.file.endswith("items.odcs.yaml") for p in problems)


def test_the_server_keeps_serving_while_a_domain_commits_an_alias_bomb(make_mesh: Any) -> None:
    """A domain's broken edit is refused quickly and not applied: other people's queries go on, and the
    server's health names the problem until the file is fixed."""
    import threading
    import time

    from fastapi.testclient import TestClient

    from trustmesh.web.app import create_app

    ws = make_mesh()
    assert ws.build().ok
    request = ws.access.request("beta-dev", "alpha.shop-dp.items", purpose="Weekly sales review",
                                purpose_category="research", days=30)
    while request["state"] == "pending":
        request = ws.access.approve(request["awaiting"][0], request["id"], note="ok")
    token, _ = ws.tokens.issue("gdo", "beta-dev", name="probe")
    ws.directory()  # the mesh as it loads now
    (ws.root / BETA).write_text(alias_bomb())
    time.sleep(1.1)  # the server looks at the files again after a second
    answers: dict[str, Any] = {}

    def attack() -> None:
        answers["directory"] = ws.directory()

    def query() -> None:
        answers["query"] = ws.gateway.run("beta-dev", 'SELECT count(*) AS n FROM alpha."shop-dp".items')

    threads = [threading.Thread(target=attack), threading.Thread(target=query)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert answers["query"].table.to_pylist() == [{"n": 3}]
    assert any("alias budget" in p.message for p in ws.unapplied)
    with TestClient(create_app(ws), headers={"Authorization": f"Bearer {token}"}) as client:
        health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and any("alias budget" in line for line in health["unapplied"])
