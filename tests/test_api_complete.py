"""The REST API's newer routes on the demo mesh: contracts, compiled quality SQL, PII scans and k-anonymity,
policies and compliance, the governance gate; and paging and ETags on the lists and catalog reads.

Each route is checked against an independent source where there is one (the CLI's JSON, the data itself counted
here, the audit trail), and for its refusals: an unknown address (404 with a fix), a malformed one (400), a caller
without the role (403), parameters outside their bounds (422) — always as problem details.
"""

from __future__ import annotations

import glob
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import yaml
from fastapi.testclient import TestClient
from httpx import Response
from meshfactory import governed_demo
from typer.testing import CliRunner

from trustmesh.cli import app as cli_app
from trustmesh.service import DIRECTORY_RECHECK_S, Workspace
from trustmesh.web.app import create_app

API = "/api/v1"
FLIGHTS = "bts.flights-dp.flights"
PARTICIPANTS = "health.activity-dp.participants"
CARRIERS = "carriers.airlines-dp"
PEOPLE = ("irfan", "nurul", "gdo-admin", "priya", "ravi", "amirah")
ENV = ("TRUSTMESH_USER", "TRUSTMESH_SERVER", "TRUSTMESH_TOKEN", "TRUSTMESH_MESH", "TRUSTMESH_METASTORE_URL")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_session_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """`trustmesh demo` without the server: built, the access story played, the Trusted Centre's policy applied."""
    ws = governed_demo(tmp_path_factory.mktemp("complete") / "mesh")
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def client(demo: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(demo)) as c:
        yield c


@pytest.fixture(scope="module")
def auth(demo: Workspace) -> dict[str, dict[str, str]]:
    """A bearer header per demo person."""
    return {who: {"Authorization": f"Bearer {demo.tokens.issue(who, who, name='tests', days=30)[0]}"}
            for who in PEOPLE}


def cli(ws: Workspace, *args: str) -> Any:
    return runner.invoke(cli_app, [*args, "--mesh", str(ws.root)])


def problem(response: Response, status: int, *words: str) -> str:
    """The response is problem details with this status, and its detail names each word."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["detail"] == body["error"]
    for word in words:
        assert word in body["detail"], body["detail"]
    return str(body["detail"])


# --- contracts ---------------------------------------------------------------------------------------------------


def test_contract_of_the_served_version_points_at_its_files(client: TestClient, auth: Any, demo: Workspace) -> None:
    response = client.get(f"{API}/datasets/{FLIGHTS}/contract", headers=auth["irfan"])
    assert response.status_code == 200, response.text
    doc = response.json()
    repo = demo.mesh.datasets[FLIGHTS].contract
    assert repo is not None
    assert doc["id"] == FLIGHTS and doc["apiVersion"] == "v3.1.0" and doc["version"] == repo.document["version"]
    assert [c["name"] for c in doc["schema"][0]["properties"]] == [c.name for c in repo.columns]
    served, files = demo.catalog.version_files(FLIGHTS)
    [server] = doc["servers"]
    assert (server["type"], server["format"]) == ("local", "parquet")
    assert sorted(glob.glob(server["path"], recursive=True)) == sorted(f.removeprefix("file://") for f in files)
    notes = {cp["property"]: cp["value"] for cp in doc["customProperties"]}
    assert notes["trustmeshAddress"] == FLIGHTS and notes["trustmeshVersion"] == served
    # version 1 is the served one here: the same document
    assert client.get(f"{API}/datasets/{FLIGHTS}/contract", params={"version": served},
                      headers=auth["irfan"]).json() == doc


def test_contract_as_yaml_is_the_cli_export(client: TestClient, auth: Any, demo: Workspace) -> None:
    response = client.get(f"{API}/datasets/{FLIGHTS}/contract", params={"format": "yaml"}, headers=auth["irfan"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/yaml")
    exported = cli(demo, "contract", "export", FLIGHTS)
    assert exported.exit_code == 0, exported.output
    assert yaml.safe_load(response.text) == yaml.safe_load(exported.stdout)
    assert yaml.safe_load(response.text) == client.get(f"{API}/datasets/{FLIGHTS}/contract",
                                                       headers=auth["irfan"]).json()


@pytest.mark.parametrize(("url", "params", "status", "words"), [
    (f"/datasets/{FLIGHTS}/contract", {"version": 99}, 404, ("no version 99", "fix: pick one of 1")),
    ("/datasets/bts.flights-dp.nope/contract", {}, 404, ("no dataset bts.flights-dp.nope", "fix:")),
    ("/datasets/bts.flights-dp/contract", {}, 400, ("not a dataset address", "fix:")),
    (f"/datasets/{FLIGHTS}/contract", {"version": 0}, 422, ("version",)),
    (f"/datasets/{FLIGHTS}/contract", {"format": "xml"}, 422, ("format",)),
    (f"/datasets/{FLIGHTS}/contract/diff", {"against": 7}, 404, ("no version 7", "fix:")),
    ("/datasets/bts.flights-dp.nope/contract/diff", {}, 404, ("bts.flights-dp.nope", "fix:")),
    ("/datasets/bts/contract/diff", {}, 400, ("not a dataset address",)),
    (f"/datasets/{FLIGHTS}/contract/diff", {"against": "three"}, 422, ("against",)),
])
def test_contract_refusals(client: TestClient, auth: Any, url: str, params: dict[str, Any], status: int,
                           words: tuple[str, ...]) -> None:
    problem(client.get(API + url, params=params, headers=auth["irfan"]), status, *words)


def test_contract_diff_names_a_breaking_change_and_the_fix(client: TestClient, auth: Any, demo: Workspace) -> None:
    url = f"{API}/datasets/{FLIGHTS}/contract/diff"
    same = client.get(url, headers=auth["irfan"]).json()
    assert same["changes"] == [] and not same["breaking"] and same["fix"] is None
    assert same["old"] == {"source": "catalog", "version": 1, "contract_version": "1.0.0"}
    assert same["new"]["source"] == "repo" and same["new"]["file"].endswith("flights.odcs.yaml")
    path = demo.root / same["new"]["file"]
    original = path.read_text(encoding="utf-8")
    retyped = original.replace("      - name: carrier\n        logicalType: string",
                               "      - name: carrier\n        logicalType: integer")  # narrowed: breaking
    assert retyped != original
    path.write_text(retyped, encoding="utf-8")
    try:
        diff = client.get(url, params={"against": 1}, headers=auth["irfan"]).json()
        shown = cli(demo, "contract", "diff", FLIGHTS, "--json")
    finally:
        path.write_text(original, encoding="utf-8")
    assert diff["breaking"] and diff["requires_major_bump"]
    assert [(c["kind"], c["path"]) for c in diff["changes"]] == [
        ("breaking", "schema[flights].properties[carrier].logicalType")]
    assert diff["fix"] is not None and "`version: 2.0.0`" in diff["fix"] and same["new"]["file"] in diff["fix"]
    assert shown.exit_code == 1 and json.loads(shown.stdout) == {k: v for k, v in diff.items() if k != "fix"}


# --- quality SQL -------------------------------------------------------------------------------------------------


def test_quality_sql_is_what_the_cli_shows(client: TestClient, auth: Any, demo: Workspace) -> None:
    response = client.get(f"{API}/datasets/{FLIGHTS}/quality/sql", headers=auth["irfan"])
    assert response.status_code == 200, response.text
    compiled = response.json()
    shown = cli(demo, "quality", FLIGHTS, "--show-sql", "--json")
    assert shown.exit_code == 0 and compiled["sql"] == json.loads(shown.stdout)["sql"]
    assert compiled["address"] == FLIGHTS and compiled["metrics"][0] == "row_count"
    assert compiled["scan_sql"] in compiled["sql"] and '"cand__flights"' in compiled["scan_sql"]
    # every rule is answered by a column the scan computes; identical metrics once
    assert set(compiled["rules"].values()) <= set(compiled["metrics"])
    assert compiled["rules"]["schema/flight_id/required"] == "m1"
    assert all(rule["sql"] in compiled["sql"] for rule in compiled["business_rules"])


def test_quality_sql_refusals(client: TestClient, auth: Any) -> None:
    problem(client.get(f"{API}/datasets/bts.flights-dp.nope/quality/sql", headers=auth["irfan"]), 404,
            "no dataset bts.flights-dp.nope", "fix:")
    problem(client.get(f"{API}/datasets/flights/quality/sql", headers=auth["irfan"]), 400, "fix:")
    problem(client.get(f"{API}/datasets/{FLIGHTS}/quality/sql"), 401, "fix:")


# --- privacy -----------------------------------------------------------------------------------------------------


def audited(ws: Workspace, type: str) -> list[dict[str, Any]]:
    return ws.audit.log("priya", type=type, limit=None)


def test_scan_as_the_steward_is_the_cli_scan_and_audited(client: TestClient, auth: Any, demo: Workspace) -> None:
    before = len(audited(demo, "privacy.scan"))
    response = client.post(f"{API}/privacy/scan", json={"dataset": PARTICIPANTS, "sample": 500}, headers=auth["nurul"])
    assert response.status_code == 200, response.text
    report = response.json()
    shown = cli(demo, "scan", PARTICIPANTS, "--sample", "500", "--as", "nurul", "--json")
    assert json.loads(shown.stdout) == report  # same reproducible sample, same report
    assert report["dataset"] == PARTICIPANTS and report["version"] == report["served_version"] == 1
    assert report["sampled"] == 500 and report["recorded"] is None
    by_column = {c["column"]: c for c in report["columns"]}
    assert by_column["nric"]["detected"] == "nric" and by_column["nric"]["status"] == "declared"
    assert report["ok"] == (report["undeclared"] == [])
    entries = audited(demo, "privacy.scan")
    assert len(entries) == before + 2  # the API's and the CLI's
    assert (entries[1]["actor"], entries[1]["subject"], entries[1]["details"]["sampled"]) == ("nurul", PARTICIPANTS, 500)


def test_scan_records_undeclared_pii_as_findings(client: TestClient, auth: Any, demo: Workspace) -> None:
    """With the phone's piiType gone from the repo's contract, the scan finds it undeclared and records it."""
    contract = demo.root / "domains/health/products/activity-dp/contracts/participants.odcs.yaml"
    original = contract.read_text(encoding="utf-8")
    undeclared = original.replace("          - property: piiType\n            value: phone\n", "")
    assert undeclared != original
    scan = {"dataset": PARTICIPANTS, "record": True, "sample": 1000}
    try:
        contract.write_text(undeclared, encoding="utf-8")
        time.sleep(DIRECTORY_RECHECK_S + 0.1)  # the server sees a repo edit within a second
        response = client.post(f"{API}/privacy/scan", json=scan, headers=auth["gdo-admin"])
        findings = client.get(f"{API}/findings", params={"dataset": PARTICIPANTS}, headers=auth["irfan"]).json()
    finally:
        contract.write_text(original, encoding="utf-8")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["undeclared"] == ["phone"] and report["ok"] is False and report["recorded"] == 1
    [finding] = [f for f in findings if f["kind"] == "undeclared-pii"]
    assert finding["column"] == "phone" and finding["build_id"] == "scan" and "fix: declare `piiType: phone`" in \
        finding["message"]
    time.sleep(DIRECTORY_RECHECK_S + 0.1)
    again = client.post(f"{API}/privacy/scan", json=scan, headers=auth["gdo-admin"]).json()  # declared again
    assert again["recorded"] == 0 and again["ok"] is True
    assert not [f for f in client.get(f"{API}/findings", params={"dataset": PARTICIPANTS},
                                      headers=auth["irfan"]).json() if f["kind"] == "undeclared-pii"]


@pytest.mark.parametrize(("who", "body", "status", "words"), [
    ("irfan", {"dataset": PARTICIPANTS}, 403, ("irfan may not scan", "fix: ask", "nurul")),
    ("ravi", {"dataset": PARTICIPANTS}, 403, ("ravi may not scan",)),
    ("nurul", {"dataset": "health.activity-dp.nope"}, 404, ("health.activity-dp.nope", "fix:")),
    ("nurul", {"dataset": "health"}, 400, ("not a dataset address", "fix:")),
    ("nurul", {"dataset": PARTICIPANTS, "record": True, "version": 2}, 400, ("served version", "fix:")),
    ("nurul", {"dataset": PARTICIPANTS, "version": 9}, 404, ("no version 9", "fix:")),
    ("nurul", {"dataset": PARTICIPANTS, "sample": 0}, 422, ("sample",)),
    ("nurul", {"dataset": PARTICIPANTS, "columns": ["nric"]}, 422, ("columns",)),
    ("nurul", {}, 422, ("dataset",)),
])
def test_scan_refusals(client: TestClient, auth: Any, who: str, body: dict[str, Any], status: int,
                       words: tuple[str, ...]) -> None:
    problem(client.post(f"{API}/privacy/scan", json=body, headers=auth[who]), status, *words)


def test_kanon_of_a_dataset_matches_the_classes_counted_here(client: TestClient, auth: Any, demo: Workspace) -> None:
    quasi = ["gender", "postal_code"]
    response = client.post(f"{API}/privacy/kanon", json={"dataset": PARTICIPANTS, "quasi": quasi, "k": 2},
                           headers=auth["nurul"])
    assert response.status_code == 200, response.text
    report = response.json()
    table = demo.catalog.read(PARTICIPANTS)
    classes = Counter(zip(*(table.column(q).to_pylist() for q in quasi), strict=True))
    assert report["source"] == {"dataset": PARTICIPANTS, "version": 1}
    assert report["rows"] == table.num_rows and report["classes"] == len(classes)
    assert report["k"] == min(classes.values()) and report["satisfied"] == (min(classes.values()) >= 2)
    assert report["classes_below_k"] == sum(1 for n in classes.values() if n < 2)
    assert report["suggestion"]["k_target"] == 2 and report["suggestion"]["reached"]
    [entry] = audited(demo, "privacy.kanon")[:1]
    assert (entry["actor"], entry["details"]["quasi"], entry["details"]["k"]) == ("nurul", quasi, 2)


def test_kanon_of_a_governed_query_is_anyones_and_masked(client: TestClient, auth: Any, demo: Workspace) -> None:
    sql = 'SELECT gender, postal_code FROM health."activity-dp".participants'
    response = client.post(f"{API}/privacy/kanon", json={"sql": sql, "quasi": ["gender", "postal_code"]},
                           headers=auth["irfan"])
    assert response.status_code == 200, response.text
    source = response.json()["source"]
    assert source["sql"] == sql and source["datasets"] == {PARTICIPANTS: 1}
    assert f"{PARTICIPANTS}.postal_code" in source["masked"]  # irfan's grant masks it, so k is of masked values
    [run] = [e for e in demo.audit.log("priya", type="query.run", limit=20) if e["details"]["query"] == source["query_id"]]
    assert run["actor"] == "irfan" and run["details"]["sql"] == sql


@pytest.mark.parametrize(("who", "body", "status", "words"), [
    ("irfan", {"dataset": PARTICIPANTS, "quasi": ["gender"]}, 403, ("irfan may not measure", "governed query")),
    ("nurul", {"dataset": PARTICIPANTS, "sql": "SELECT 1", "quasi": ["gender"]}, 400, ("not both", "fix:")),
    ("nurul", {"quasi": ["gender"]}, 400, ("name a dataset or give a query", "fix:")),
    ("nurul", {"sql": "SELECT 1 AS a", "version": 1, "quasi": ["a"]}, 400, ("is for a dataset", "fix:")),
    ("nurul", {"dataset": PARTICIPANTS, "quasi": ["zip"]}, 400, ("no column(s) zip", "fix:")),
    ("nurul", {"dataset": PARTICIPANTS, "quasi": ["gender"], "weight": "nric"}, 400, ("not a number", "fix:")),
    ("nurul", {"dataset": PARTICIPANTS, "quasi": []}, 422, ("quasi",)),
    ("nurul", {"dataset": PARTICIPANTS, "quasi": ["gender"], "k": 0}, 422, ("k",)),
    ("nurul", {"dataset": PARTICIPANTS, "quasi": ["gender"], "max_suppression": 1}, 422, ("max_suppression",)),
    ("irfan", {"sql": "DROP TABLE x", "quasi": ["a"]}, 403, ()),
])
def test_kanon_refusals(client: TestClient, auth: Any, who: str, body: dict[str, Any], status: int,
                        words: tuple[str, ...]) -> None:
    problem(client.post(f"{API}/privacy/kanon", json=body, headers=auth[who]), status, *words)


# --- governance --------------------------------------------------------------------------------------------------


def test_policies_are_the_cli_list(client: TestClient, auth: Any, demo: Workspace) -> None:
    response = client.get(f"{API}/governance/policies", headers=auth["irfan"])
    assert response.status_code == 200, response.text
    listed = cli(demo, "policy", "list", "--json")
    assert response.json() == json.loads(listed.stdout)
    by_id = {p["id"]: p for p in response.json()["policies"]}
    assert by_id["transport.carrier-codes"]["level"] == "sector"
    assert by_id["transport.carrier-codes"]["owner"] == "transport-tc"


def test_product_statuses_page_and_filter(client: TestClient, auth: Any, demo: Workspace) -> None:
    stored = demo.governance.statuses()
    url = f"{API}/governance/products"
    first = client.get(url, params={"limit": 3}, headers=auth["irfan"])
    assert first.status_code == 200 and first.headers["x-total-count"] == str(len(stored))
    assert [s["product"] for s in first.json()] == sorted(stored)[:3]
    assert first.headers["link"] == '</api/v1/governance/products?offset=3&limit=3>; rel="next"'
    everything = walk(client, url + "?limit=4", auth["irfan"])
    assert [s["product"] for s in everything] == sorted(stored)
    assert all(s["status"] == stored[s["product"]]["status"] for s in everything)
    unfit = client.get(url, params={"status": "unfit for consumption"}, headers=auth["irfan"]).json()
    assert [s["product"] for s in unfit] == sorted(a for a, s in stored.items()
                                                   if s["status"] == "unfit for consumption")
    assert CARRIERS in [s["product"] for s in unfit]
    assert [s["product"] for s in client.get(url, params={"domain": "bts"}, headers=auth["irfan"]).json()] == [
        "bts.flights-dp"]
    for params in ({"status": "fine"}, {"limit": 0}, {"limit": 1001}, {"offset": -1}):
        problem(client.get(url, params=params, headers=auth["irfan"]), 422)


def test_one_products_status_with_history(client: TestClient, auth: Any, demo: Workspace) -> None:
    response = client.get(f"{API}/governance/products/{CARRIERS}", headers=auth["irfan"])
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["product"] == CARRIERS and status["status"] == "unfit for consumption"
    assert {f["policy"] for f in status["findings"]} >= {"transport.carrier-codes"}
    assert status["history"] == demo.governance.history(CARRIERS)
    assert status["history"][-1]["status"] == status["status"]
    problem(client.get(f"{API}/governance/products/bts.nope-dp", headers=auth["irfan"]), 404,
            "no governance status for bts.nope-dp", "fix:")
    problem(client.get(f"{API}/governance/products/bts", headers=auth["irfan"]), 400, "not a product address", "fix:")


def test_apply_takes_a_policy_owner_or_a_governance_admin(client: TestClient, auth: Any, demo: Workspace) -> None:
    problem(client.post(f"{API}/governance/apply", headers=auth["irfan"]), 403,
            "irfan may not apply", "governance admin", "transport-tc", "fix:")
    problem(client.post(f"{API}/governance/apply", headers=auth["priya"]), 403, "priya may not apply")
    refused = cli(demo, "policy", "apply", "--as", "irfan")
    assert refused.exit_code == 1 and "irfan may not apply" in refused.output
    runs = len(audited(demo, "governance.evaluated"))
    for who in ("ravi", "gdo-admin"):
        response = client.post(f"{API}/governance/apply", headers=auth[who])
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["trigger"] == "apply" and report["changed_policies"] == [] and report["changes"] == []
        assert report["summary"]["products"] == len(report["statuses"]) == len(demo.mesh.products)
        assert report["statuses"][CARRIERS]["status"] == "unfit for consumption"
        assert audited(demo, "governance.evaluated")[0]["actor"] == who
    assert len(audited(demo, "governance.evaluated")) == runs + 2


def test_compliance_report_in_three_formats(client: TestClient, auth: Any, demo: Workspace) -> None:
    url = f"{API}/governance/report"
    data = client.get(url, headers=auth["irfan"]).json()
    assert data["products"] == len(demo.mesh.products) == sum(data["totals"].values())
    assert {u["product"] for u in data["unfit"]} == {CARRIERS}
    transport = client.get(url, params={"sector": "transport"}, headers=auth["irfan"]).json()
    assert {d["domain"] for d in transport["by_domain"]} == {
        name for name, d in demo.mesh.domains.items() if d.sector == "transport"} != set(demo.mesh.domains)
    markdown = client.get(url, params={"format": "md"}, headers=auth["irfan"])
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith(f"# {data['title']}") and CARRIERS in markdown.text
    html = client.get(url, params={"format": "html"}, headers=auth["irfan"])
    assert html.headers["content-type"].startswith("text/html") and "<html" in html.text and CARRIERS in html.text
    shown = cli(demo, "report", "compliance", "--format", "json")
    assert {k: v for k, v in json.loads(shown.stdout).items() if k != "generated_at"} == {
        k: v for k, v in data.items() if k != "generated_at"}
    problem(client.get(url, params={"sector": "space"}, headers=auth["irfan"]), 400, "no sector 'space'", "fix:")
    problem(client.get(url, params={"domain": "nope"}, headers=auth["irfan"]), 400, "no domain 'nope'", "fix:")
    problem(client.get(url, params={"format": "pdf"}, headers=auth["irfan"]), 422, "format")


def test_check_is_the_ci_gate(client: TestClient, auth: Any, demo: Workspace) -> None:
    url = f"{API}/governance/check"
    gate = client.get(url, headers=auth["irfan"]).json()
    shown = cli(demo, "check", "--format", "json")
    assert shown.exit_code == 1 and json.loads(shown.stdout) == gate
    assert gate["ok"] is False  # carriers fails a binding sector policy
    assert gate["products"][CARRIERS]["status"] == "unfit for consumption"
    bts = client.get(url, params={"selector": "bts"}, headers=auth["irfan"]).json()
    assert list(bts["products"]) == ["bts.flights-dp"] and bts["ok"] is True
    junit = client.get(url, params={"format": "junit"}, headers=auth["irfan"])
    assert junit.headers["content-type"].startswith("application/xml")
    suites = {s.get("name"): s for s in ET.fromstring(junit.text).iter("testsuite")}
    assert int(suites[CARRIERS].get("failures") or 0) >= 1
    sarif = client.get(url, params={"format": "sarif"}, headers=auth["irfan"])
    assert sarif.headers["content-type"].startswith("application/sarif+json")
    assert json.loads(sarif.text)["version"] == "2.1.0"
    problem(client.get(url, params={"selector": "nope"}, headers=auth["irfan"]), 400, "selector 'nope'", "fix:")
    problem(client.get(url, params={"format": "text"}, headers=auth["irfan"]), 422, "format")


# --- paging ------------------------------------------------------------------------------------------------------


def walk(client: TestClient, url: str, headers: dict[str, str]) -> list[Any]:
    """Every item of a paged list, following `Link: rel="next"` until it stops; each page repeats the total."""
    items: list[Any] = []
    total = None
    for _ in range(1000):
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        total = total or response.headers["x-total-count"]
        assert response.headers["x-total-count"] == total
        page = response.json()
        items += page
        link = response.headers.get("link")
        if link is None:
            break
        found = re.fullmatch(r'<(/api/v1/[^>]+)>; rel="next"', link)
        assert found, link
        url = found.group(1)
    assert str(len(items)) == total
    return items


def test_datasets_page_through_the_whole_list(client: TestClient, auth: Any, demo: Workspace) -> None:
    everything = demo.catalog.datasets()
    url = f"{API}/datasets"
    whole = client.get(url, headers=auth["irfan"])  # the default page holds the demo's datasets: same body as ever
    assert whole.json() == everything and whole.headers["x-total-count"] == str(len(everything))
    assert "link" not in whole.headers
    assert walk(client, url + "?limit=4", auth["irfan"]) == everything
    tail = client.get(url, params={"limit": 5, "offset": len(everything) - 2}, headers=auth["irfan"])
    assert tail.json() == everything[-2:] and "link" not in tail.headers
    beyond = client.get(url, params={"offset": len(everything) + 5}, headers=auth["irfan"])
    assert beyond.json() == [] and beyond.headers["x-total-count"] == str(len(everything))
    bts = client.get(url, params={"domain": "bts", "limit": 1}, headers=auth["irfan"])
    assert bts.headers["x-total-count"] == "1" and [d["address"] for d in bts.json()] == [FLIGHTS]
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "ten"}):
        problem(client.get(url, params=params, headers=auth["irfan"]), 422, "limit" if "limit" in params else "offset")


def test_search_links_the_next_page(client: TestClient, auth: Any) -> None:
    first = client.get(f"{API}/search", params={"q": "flight", "limit": 2}, headers=auth["irfan"])
    body = first.json()
    assert first.headers["x-total-count"] == str(body["total"]) and body["total"] > 2
    assert first.headers["link"] == '</api/v1/search?q=flight&offset=2&limit=2>; rel="next"'
    hits = []
    for offset in range(0, body["total"], 2):
        hits += client.get(f"{API}/search", params={"q": "flight", "limit": 2, "offset": offset},
                           headers=auth["irfan"]).json()["hits"]
    assert hits == client.get(f"{API}/search", params={"q": "flight", "limit": 500}, headers=auth["irfan"]).json()["hits"]
    last = client.get(f"{API}/search", params={"q": "flight", "limit": 2, "offset": body["total"] - 1},
                      headers=auth["irfan"])
    assert "link" not in last.headers
    problem(client.get(f"{API}/search", params={"limit": 501}, headers=auth["irfan"]), 422, "limit")


def test_access_lists_page_both_requests_and_grants(client: TestClient, auth: Any, demo: Workspace) -> None:
    everything = demo.access.overview("priya", "all")
    url = f"{API}/access/requests"
    total = max(len(everything["requests"]), len(everything["grants"]))
    first = client.get(url, params={"view": "all", "limit": 3}, headers=auth["priya"])
    assert first.headers["x-total-count"] == str(total)
    assert first.json()["requests"] == everything["requests"][:3] and first.json()["grants"] == everything["grants"][:3]
    assert first.headers["link"] == '</api/v1/access/requests?view=all&offset=3&limit=3>; rel="next"'
    requests, grants, offset = [], [], 0
    while offset < total:
        page = client.get(url, params={"view": "all", "limit": 3, "offset": offset}, headers=auth["priya"]).json()
        requests, grants, offset = requests + page["requests"], grants + page["grants"], offset + 3
    assert requests == everything["requests"] and grants == everything["grants"]
    inbox = client.get(f"{API}/access/inbox", params={"limit": 1}, headers=auth["amirah"])
    assert inbox.headers["x-total-count"] == "1" and [r["requester"] for r in inbox.json()["requests"]] == ["jiahui"]
    mine = client.get(f"{API}/access/mine", headers=auth["irfan"])
    assert mine.headers["x-total-count"] == str(len(demo.access.overview("irfan", "mine")["requests"]))
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -3}):
        problem(client.get(url, params=params, headers=auth["priya"]), 422)
    problem(client.get(url, params={"view": "all"}, headers=auth["irfan"]), 403, "irfan may not list every request")


def test_audit_log_pages_by_sequence(client: TestClient, auth: Any, demo: Workspace) -> None:
    everything = demo.audit.log("priya", limit=None)
    first = client.get(f"{API}/audit", params={"limit": 7}, headers=auth["priya"])
    assert first.status_code == 200, first.text
    page = first.json()
    assert page == everything[:7] and first.headers["x-total-count"] == str(len(everything))
    assert first.headers["link"] == f'</api/v1/audit?before={page[-1]["seq"]}&limit=7>; rel="next"'
    assert walk(client, f"{API}/audit?limit=25", auth["priya"]) == everything  # reading the trail adds nothing
    scans = client.get(f"{API}/audit", params={"type": "privacy.", "limit": 1}, headers=auth["priya"])
    assert scans.headers["x-total-count"] == str(len(demo.audit.log("priya", type="privacy.", limit=None)))
    older = client.get(f"{API}/audit", params={"before": everything[-1]["seq"] + 1, "limit": 5}, headers=auth["priya"])
    assert [e["seq"] for e in older.json()] == [everything[-1]["seq"]] and "link" not in older.headers
    problem(client.get(f"{API}/audit", params={"before": 0}, headers=auth["priya"]), 422, "before")
    problem(client.get(f"{API}/audit", params={"since": "yesterday"}, headers=auth["priya"]), 400, "since", "fix:")
    problem(client.get(f"{API}/audit", headers=auth["irfan"]), 403, "irfan may not read the audit trail")


# --- ETags -------------------------------------------------------------------------------------------------------

CACHED = [f"/products/{FLIGHTS.rsplit('.', 1)[0]}", f"/datasets/{FLIGHTS}", f"/datasets/{FLIGHTS}/versions",
          f"/datasets/{FLIGHTS}/quality", f"/lineage/{FLIGHTS}", f"/datasets/{FLIGHTS}/contract"]


@pytest.mark.parametrize("url", CACHED)
def test_catalog_reads_revalidate_with_an_etag(client: TestClient, auth: Any, url: str) -> None:
    for _ in range(3):  # a freshness age moves every 36 seconds: its body (and tag) may change between two reads
        first = client.get(API + url, headers=auth["irfan"])
        tag = first.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', tag) and first.headers["cache-control"] == "private, no-cache"
        again = client.get(API + url, headers={**auth["irfan"], "If-None-Match": tag})
        if again.status_code == 200:
            assert again.headers["etag"] != tag and again.json() != first.json()
            continue
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
        break
    else:
        pytest.fail(f"{url} never answered 304 to its own ETag")
    for held in (f'"stale", {tag}', f"W/{tag}", "*"):
        assert client.get(API + url, headers={**auth["irfan"], "If-None-Match": held}).status_code == 304
    other = client.get(API + url, headers={**auth["irfan"], "If-None-Match": '"0123"'})
    assert other.status_code == 200 and re.fullmatch(r'"[0-9a-f]{32}"', other.headers["etag"])


def test_etag_differs_with_the_answer_and_errors_carry_none(client: TestClient, auth: Any) -> None:
    up = client.get(f"{API}/lineage/{FLIGHTS}", headers=auth["irfan"])
    down = client.get(f"{API}/lineage/{FLIGHTS}", params={"direction": "down"}, headers=auth["irfan"])
    assert up.json() != down.json() and up.headers["etag"] != down.headers["etag"]
    stale = client.get(f"{API}/lineage/{FLIGHTS}", params={"direction": "down"},
                       headers={**auth["irfan"], "If-None-Match": up.headers["etag"]})
    assert stale.status_code == 200 and stale.json() == down.json()
    missing = client.get(f"{API}/datasets/bts.flights-dp.nope", headers={**auth["irfan"], "If-None-Match": "*"})
    assert missing.status_code == 404 and "etag" not in missing.headers
    # the state-changing routes are not conditional
    apply = client.post(f"{API}/governance/apply", headers={**auth["ravi"], "If-None-Match": "*"})
    assert apply.status_code == 200 and "etag" not in apply.headers


def test_the_document_promises_what_the_routes_do(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    new = {"/datasets/{address}/contract": "get", "/datasets/{address}/contract/diff": "get",
           "/datasets/{address}/quality/sql": "get", "/privacy/scan": "post", "/privacy/kanon": "post",
           "/governance/policies": "get", "/governance/products": "get", "/governance/products/{address}": "get",
           "/governance/apply": "post", "/governance/report": "get", "/governance/check": "get"}
    for path, method in new.items():
        operation = paths[API + path][method]
        assert operation["summary"] and operation["description"], path
        errors = {code for code in operation["responses"] if code.startswith(("4", "5"))}
        assert {"400", "401", "404", "422"} <= errors, path
        for code in errors:
            assert "application/problem+json" in operation["responses"][code]["content"], (path, code)
    assert "403" in paths[f"{API}/privacy/scan"]["post"]["responses"]
    assert "403" in paths[f"{API}/governance/apply"]["post"]["responses"]
    product = paths[f"{API}/products/{{address}}"]["get"]
    assert "304" in product["responses"] and "ETag" in product["responses"]["200"]["headers"]
    assert "if-none-match" in [p["name"].lower() for p in product["parameters"]]
    listing = paths[f"{API}/datasets"]["get"]
    assert {"X-Total-Count", "Link"} <= set(listing["responses"]["200"]["headers"])
    assert {p["name"]: p["schema"].get("maximum") for p in listing["parameters"] if p["name"] == "limit"} == {
        "limit": 1000}
    assert not any("__" in name for name in doc["components"]["schemas"])  # no model name clashes
