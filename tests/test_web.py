"""The REST API and the catalog pages, in-process, over a small scaffolded mesh built once for the module."""

from __future__ import annotations

import itertools
import re
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from meshfactory import grant_product_inputs

from trustmesh.scaffold import init_mesh, new_domain, new_product
from trustmesh.service import Workspace
from trustmesh.web import graph
from trustmesh.web.app import app_from_environment, create_app
from trustmesh.web.render import age, plain, quality_band, source_label
from trustmesh.yamlfile import dump_yaml, load_yaml

with warnings.catch_warnings():
    # Starlette asks for httpx2; httpx is what the dev extra installs and it still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

SCRIPT = '<script>alert("owned")</script>'


def _edit_yaml(path: Path, change: Any) -> None:
    doc, problem = load_yaml(path)
    assert doc is not None, problem
    change(doc.data)
    path.write_text(dump_yaml(doc.data), encoding="utf-8")


def _hostile_description(product: dict[str, Any]) -> None:
    product["description"]["purpose"] = f"Flights {SCRIPT} & more."


def _personal_category(contract: dict[str, Any]) -> None:
    prop = next(p for p in contract["schema"][0]["properties"] if p["name"] == "category")
    prop["classification"] = "restricted"
    prop["customProperties"] = [{"property": "sensitivity", "value": "sensitive-normal"},
                                {"property": "piiType", "value": "name"}]


def _only_alpha_hourly(contract: dict[str, Any]) -> None:
    """A warning the data fails (row 2 is `beta`), and a freshness SLA of one second, soon past."""
    prop = next(p for p in contract["schema"][0]["properties"] if p["name"] == "category")
    prop["quality"] = [{"metric": "invalidValues", "arguments": {"validValues": ["alpha"]}, "mustBe": 0,
                        "severity": "warning", "dimension": "conformity", "name": "only-alpha"}]
    contract["slaProperties"] = [{"property": "frequency", "value": 1, "unit": "s"}]


def _transport_benchmark(domain: dict[str, Any]) -> None:
    domain["qualityBenchmarks"] = [{"name": "no-null-keys", "appliesTo": {"primaryKey": True},
                                    "metric": "nullValues", "mustBe": 0, "severity": "error"}]


def _reads_flights(product: dict[str, Any]) -> None:
    """transport-tc.delays-dp reads bts.flights-dp.flights: a lineage edge across domains."""
    product["inputPorts"] = [{"name": "flights", "version": "1.0.0", "contractId": "bts.flights-dp.flights",
                              "customProperties": [{"property": "source", "value": {
                                  "type": "product", "address": "bts.flights-dp.flights"}}]}]


DELAYS_SQL = ('SELECT record_id, recorded_on, category, amount * 2 AS amount FROM bts."flights-dp".flights\n'
              "WHERE category = 'alpha'\n")
UNTRACEABLE_SQL = "SELECT COLUMNS('record_id|recorded_on|category|amount') FROM raw_records\n"  # → a no-lineage finding


def _impossible_row_count(contract: dict[str, Any]) -> None:
    contract["schema"][0]["quality"] = [{"metric": "rowCount", "mustBeGreaterThan": 100, "severity": "error",
                                         "name": "enough-rows"}]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """bts.flights-dp (official-open, hostile description, a failing warning, stale, the transport-tc benchmark),
    transport-tc.delays-dp reading its flights, and health.patients-dp (one restricted PII column, SQL the lineage
    cannot trace; a second build quarantined by a failing error)."""
    root = tmp_path_factory.mktemp("mesh")
    init_mesh(root)
    new_domain(root, "bts", "ssot", "transport")
    _edit_yaml(new_domain(root, "transport-tc", "trusted-centre", "transport"), _transport_benchmark)
    _edit_yaml(new_product(root, "bts", "flights-dp"), _hostile_description)
    _edit_yaml(root / "domains/bts/products/flights-dp/contracts/flights.odcs.yaml", _only_alpha_hourly)
    delays = new_product(root, "transport-tc", "delays-dp")
    _edit_yaml(delays, _reads_flights)
    (delays.parent / "sql/delays.sql").write_text(DELAYS_SQL, encoding="utf-8")
    new_domain(root, "health", "ssot", "health")
    new_product(root, "health", "patients-dp")
    (root / "domains/health/products/patients-dp/sql/patients.sql").write_text(UNTRACEABLE_SQL, encoding="utf-8")
    patients = root / "domains/health/products/patients-dp/contracts/patients.odcs.yaml"
    _edit_yaml(patients, _personal_category)
    ws = Workspace.open(root)
    grant_product_inputs(ws)
    result = ws.build()
    assert result.ok, result.to_dict()
    _edit_yaml(patients, _impossible_row_count)
    assert not ws.build().ok  # the candidate is quarantined; version 1 stays served
    time.sleep(max(0.0, 1.1 - (time.time() - _published(ws, "bts.flights-dp.flights"))))  # flights: past its 1 s SLA
    yield ws
    ws.close()


def _published(ws: Workspace, address: str) -> float:
    return datetime.fromisoformat(ws.catalog.versions(address)[0]["published_at"]).timestamp()


@pytest.fixture(scope="module")
def token(mesh: Workspace) -> str:
    value, _ = mesh.tokens.issue("gdo-admin", "gdo-admin", name="web tests", days=1)
    return value


@pytest.fixture(scope="module")
def client(mesh: Workspace, token: str) -> Iterator[TestClient]:
    """Signed in as the governance admin, by bearer token (the pages take one too, as their JSON twins do)."""
    with TestClient(create_app(mesh), headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


# --- API ----------------------------------------------------------------------------------------------------------


def test_health(client: TestClient) -> None:
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok" and body["metastore"] == "sqlite" and body["domains"] == 3


def test_domains(client: TestClient) -> None:
    domains = client.get("/api/v1/domains").json()
    assert [(d["name"], d["sector"], d["products"]) for d in domains] == [
        ("bts", "transport", 1), ("health", "health", 1), ("transport-tc", "transport", 1)]


def test_datasets_all_and_by_domain(client: TestClient) -> None:
    every = client.get("/api/v1/datasets").json()
    assert [d["address"] for d in every] == ["bts.flights-dp.flights", "health.patients-dp.patients",
                                             "transport-tc.delays-dp.delays"]
    assert every[0]["rows"] == 3 and every[0]["version"] == 1
    assert [(d["stale"], d["quality_score"] < 100) for d in every[:2]] == [(True, True), (False, False)]
    only = client.get("/api/v1/datasets", params={"domain": "health"}).json()
    assert [d["address"] for d in only] == ["health.patients-dp.patients"]


def test_show_dataset(client: TestClient) -> None:
    ds = client.get("/api/v1/datasets/health.patients-dp.patients").json()
    assert ds["classification"] == "restricted" and ds["has_pii"] is True
    assert [c["name"] for c in ds["columns"]] == ["record_id", "recorded_on", "category", "amount"]
    category = ds["columns"][2]
    assert (category["pii_type"], category["sensitivity"]) == ("name", "sensitive-normal")
    assert ds["owners"]["data-owner"][0]["email"] == "owner@health.gov.sg"
    assert ds["current_version"]["rows"] == 3


def test_versions(client: TestClient) -> None:
    versions = client.get("/api/v1/datasets/bts.flights-dp.flights/versions").json()
    assert [(v["version"], v["rows"], v["contract_version"]) for v in versions] == [(1, 3, "0.1.0")]
    assert versions[0]["quality"]["failed_warnings"] == 1 and versions[0]["quality_score"] == versions[0]["quality"]["score"]


def test_product(client: TestClient) -> None:
    product = client.get("/api/v1/products/bts.flights-dp").json()
    assert (product["kind"], product["tier"], product["status"]) == ("source-aligned", "gold", "draft")
    assert SCRIPT in product["description"]["purpose"]
    assert [d["address"] for d in product["datasets"]] == ["bts.flights-dp.flights"]
    assert product["datasets"][0]["versions"][0]["version"] == 1
    assert product["stale"] is True and product["quality_score"] == product["datasets"][0]["quality"]["score"]


def _check(checks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in checks if c["name"] == name)


def bts_steward(mesh: Workspace) -> dict[str, str]:
    """A person of bts, the domain of bts.flights-dp: the one kind of reader who sees its failing-row samples."""
    token, _ = mesh.tokens.issue("bts-steward", "bts-steward", name="web tests", days=1)
    return {"Authorization": f"Bearer {token}"}


def test_quality(client: TestClient, mesh: Workspace) -> None:
    quality = client.get("/api/v1/datasets/bts.flights-dp.flights/quality", headers=bts_steward(mesh)).json()
    assert quality["samples_withheld"] is None
    assert (quality["address"], quality["version"]) == ("bts.flights-dp.flights", 1)
    assert 80 <= quality["score"] < 95 and quality["summary"]["failed_warnings"] == 1
    assert quality["summary"]["failed_errors"] == 0
    warning = _check(quality["checks"], "only-alpha")
    assert (warning["passed"], warning["severity"], warning["column"], warning["metric"]) == (
        False, "warning", "category", "invalidValues")
    assert (warning["value"], warning["expected"]) == (1.0, "= 0")
    assert warning["samples"] == [{"record_id": 2, "category": "beta"}]  # the row that is not alpha
    assert _check(quality["checks"], "no-null-keys")["source"] == "benchmark:transport-tc"
    fresh = quality["freshness"]
    assert (fresh["sla"], fresh["stale"]) == ("frequency 1 s", True) and "due_at" in fresh
    assert quality["history"] == [{"version": 1, "published_at": quality["history"][0]["published_at"],
                                   "score": quality["score"]}]
    assert quality["quarantine"] == []


def test_quality_lists_quarantined_candidates(client: TestClient) -> None:
    quality = client.get("/api/v1/datasets/health.patients-dp.patients/quality").json()
    assert quality["version"] == 1 and quality["score"] == 100 and quality["freshness"]["stale"] is False
    [candidate] = quality["quarantine"]
    assert (candidate["reason"], candidate["rows"]) == ("failed: enough-rows", 3)
    failed = _check(candidate["checks"], "enough-rows")
    assert (failed["passed"], failed["severity"], failed["value"]) == (False, "error", 3.0)


def test_search_hits_and_facets(client: TestClient) -> None:
    result = client.get("/api/v1/search", params={"q": "record"}).json()
    kinds = {(h["kind"], h["dataset"]) for h in result["hits"]}
    assert ("dataset", "bts.flights-dp.flights") in kinds and ("column", "health.patients-dp.patients") in kinds
    assert result["facets"]["domain"] == {"bts": 1, "health": 1, "transport-tc": 1}
    assert result["facets"]["classification"] == {"official-open": 2, "restricted": 1}
    assert result["facets"]["has_pii"] == {"false": 2, "true": 1}
    flights = next(h for h in result["hits"] if h["kind"] == "dataset")
    assert flights["dataset"] == "bts.flights-dp.flights" and flights["stale"] is True
    assert 80 <= flights["quality_score"] < 95
    column = next(h for h in result["hits"] if h["kind"] == "column")
    assert "quality_score" not in column and "stale" not in column  # the catalog's shape, no nulls added


def test_search_filters(client: TestClient) -> None:
    pii = client.get("/api/v1/search", params={"q": "record", "pii": "true"}).json()
    assert pii["filters"] == {"has_pii": True}
    assert {h["dataset"] for h in pii["hits"]} == {"health.patients-dp.patients"}
    sector = client.get("/api/v1/search", params={"sector": "transport", "domain": ""}).json()
    assert [h["address"] for h in sector["hits"]] == ["bts.flights-dp.flights", "transport-tc.delays-dp.delays"]
    assert sector["filters"] == {"sector": "transport"}  # an empty field means "any"
    limited = client.get("/api/v1/search", params={"q": "record", "limit": 1}).json()
    assert len(limited["hits"]) == 1 and limited["total"] > 1


def test_search_by_standing(client: TestClient) -> None:
    """Quality band, freshness and compliance filter and count like the indexed facets."""
    every = client.get("/api/v1/search").json()
    assert every["facets"]["freshness"] == {"stale": 1, "fresh": 2}
    assert every["facets"]["quality"] == {"fair": 1, "good": 2}
    assert every["facets"]["governance"] == {"not evaluated": 3}
    stale = client.get("/api/v1/search", params={"freshness": "stale"}).json()
    assert [h["address"] for h in stale["hits"]] == ["bts.flights-dp.flights"] and stale["facets"]["freshness"] == {
        "stale": 1}
    fair = client.get("/api/v1/search", params={"q": "record", "quality": "fair"}).json()
    assert {h["dataset"] for h in fair["hits"]} == {"bts.flights-dp.flights"}
    assert client.get("/api/v1/search", params={"governance": "compliant"}).json()["hits"] == []
    bad = client.get("/api/v1/search", params={"quality": "excellent"})
    assert bad.status_code == 422 and "quality" in bad.json()["detail"]
    page = client.get("/", params={"freshness": "stale"}).text
    assert "Stale (past its SLA)" in page and "bts.flights-dp.flights" in page and "transport-tc.delays-dp" not in page


def test_search_pages_through_hits(client: TestClient) -> None:
    first = client.get("/api/v1/search", params={"q": "record", "limit": 2}).json()
    second = client.get("/api/v1/search", params={"q": "record", "limit": 2, "offset": 2}).json()
    assert first["total"] == second["total"] > 2
    assert not {h["address"] for h in first["hits"]} & {h["address"] for h in second["hits"]}
    assert client.get("/api/v1/search", params={"offset": -1}).status_code == 422


def test_unknown_dataset_is_404_with_a_fix(client: TestClient) -> None:
    response = client.get("/api/v1/datasets/bts.flights-dp.nope")
    assert response.status_code == 404
    body = response.json()
    assert "bts.flights-dp.nope" in body["error"] and "fix" in body["error"] and body["problems"] == []
    assert client.get("/api/v1/datasets/bts.flights-dp.nope/versions").status_code == 404
    quality = client.get("/api/v1/datasets/bts.flights-dp.nope/quality")
    assert quality.status_code == 404 and "bts.flights-dp.nope" in quality.json()["error"]
    assert client.get("/api/v1/products/bts.nope-dp").status_code == 404


@pytest.mark.parametrize("url", ["/api/v1/datasets/nodots", "/api/v1/datasets/a..b", "/api/v1/products/nodots",
                                 "/api/v1/products/a.b.c", "/api/v1/datasets/nodots/quality"])
def test_malformed_address_is_400(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 400
    assert "not a" in response.json()["error"] and "e.g. bts.flights-dp" in response.json()["error"]


def test_bad_parameter_keeps_fastapi_detail(client: TestClient) -> None:
    assert client.get("/api/v1/search", params={"limit": "many"}).status_code == 422


# --- lineage API --------------------------------------------------------------------------------------------------

DELAYS = "transport-tc.delays-dp.delays"
FLIGHTS = "bts.flights-dp.flights"


def _edge_set(body: dict[str, Any]) -> set[tuple[str, str, str, str, str, str]]:
    return {(e["source_dataset"], e["source_column"], e["dataset"], e["column"], e["type"], e["subtype"])
            for e in body["edges"]}


def test_lineage_upstream_crosses_domains(client: TestClient) -> None:
    near = client.get(f"/api/v1/lineage/{DELAYS}", params={"direction": "up", "depth": 1}).json()
    assert (near["dataset"], near["column"], near["direction"], near["depth"]) == (DELAYS, None, "up", 1)
    assert near["datasets"] == [FLIGHTS]
    edges = _edge_set(near)
    assert (FLIGHTS, "amount", DELAYS, "amount", "DIRECT", "TRANSFORMATION") in edges
    assert (FLIGHTS, "category", DELAYS, "record_id", "INDIRECT", "FILTER") in edges  # the WHERE
    every = client.get(f"/api/v1/lineage/{DELAYS}").json()  # up, unbounded: through flights to its CSV
    assert every["datasets"] == [FLIGHTS, "source:bts.flights-dp.raw_records"] and every["depth"] is None
    assert {e["depth"] for e in every["edges"]} == {1, 2}


def test_lineage_downstream_of_one_column(client: TestClient) -> None:
    down = client.get(f"/api/v1/lineage/{FLIGHTS}.category", params={"direction": "down"}).json()
    assert (down["column"], down["datasets"]) == ("category", [DELAYS])
    assert {(e["column"], e["type"]) for e in down["edges"]} == {
        ("category", "DIRECT"), ("category", "INDIRECT"), ("amount", "INDIRECT"), ("record_id", "INDIRECT"),
        ("recorded_on", "INDIRECT")}
    assert all(e["masking"] is False and e["depth"] == 1 for e in down["edges"])


def test_impact_names_products_domains_and_owners(client: TestClient) -> None:
    hurt = client.get(f"/api/v1/impact/{FLIGHTS}.amount", params={"change": "retype"}).json()
    assert (hurt["source"], hurt["change"]) == (f"{FLIGHTS}.amount", "retype")
    assert (hurt["products"], hurt["domains"]) == (["bts.flights-dp", "transport-tc.delays-dp"], ["bts", "transport-tc"])
    own, delays = hurt["datasets"]  # the changed dataset itself, then what reads it
    assert own["dataset"] == FLIGHTS and own["columns"] == [
        {"column": "amount", "via": ["itself"], "effect": "consumers read other values or a different type"}]
    assert [c["principal"] for c in own["consumers"]] == ["transport-tc.delays-dp"]  # its input port's grant
    assert delays["columns"] == [{"column": "amount", "via": ["direct transformation"],
                                  "effect": "its type or values may change"}]
    assert delays["owners"]["data-owner"] == ["transport-tc data owner"] and delays["consumers"] == []
    assert delays["queried_by"] == []
    dropped = client.get(f"/api/v1/impact/{FLIGHTS}.category").json()  # drop is the default
    assert dropped["change"] == "drop"
    assert {c["column"] for c in dropped["datasets"][1]["columns"]} == {"amount", "category", "record_id", "recorded_on"}
    assert all(c["effect"].startswith("breaks") for d in dropped["datasets"] for c in d["columns"])
    alone = client.get(f"/api/v1/impact/{DELAYS}.amount").json()["datasets"]  # nothing reads delays
    assert [d["dataset"] for d in alone] == [DELAYS]


def test_findings(client: TestClient) -> None:
    [finding] = client.get("/api/v1/findings").json()
    assert (finding["dataset"], finding["kind"], finding["severity"], finding["column"], finding["version"]) == (
        "health.patients-dp.patients", "no-lineage", "warning", None, 1)
    assert "COLUMNS" in finding["message"] and finding["build_id"]
    only = client.get("/api/v1/findings", params={"dataset": "health.patients-dp.patients"}).json()
    assert only == [finding]
    assert client.get("/api/v1/findings", params={"dataset": FLIGHTS}).json() == []
    assert client.get("/api/v1/findings", params={"dataset": ""}).json() == [finding]  # an empty field: all


@pytest.mark.parametrize(("url", "params", "words"), [
    ("/api/v1/lineage/bts.flights-dp.nope", {}, "no dataset bts.flights-dp.nope"),
    ("/api/v1/lineage/bts.flights-dp.flights.nope", {}, "has no column 'nope'"),
    ("/api/v1/impact/bts.flights-dp.flights.nope", {}, "has no column 'nope'"),
    ("/api/v1/impact/bts.nope-dp.flights.amount", {}, "no dataset bts.nope-dp.flights"),
])
def test_lineage_unknown_is_404(client: TestClient, url: str, params: dict[str, str], words: str) -> None:
    response = client.get(url, params=params)
    assert response.status_code == 404 and words in response.json()["error"] and "fix" in response.json()["error"]


@pytest.mark.parametrize(("url", "params", "words"), [
    ("/api/v1/lineage/nodots", {}, "not an address"),
    ("/api/v1/lineage/a.b.c.d.e", {}, "not an address"),
    (f"/api/v1/lineage/{FLIGHTS}", {"direction": "sideways"}, "up or down"),
    (f"/api/v1/impact/{FLIGHTS}", {}, "names a dataset"),
    (f"/api/v1/impact/{FLIGHTS}.amount", {"change": "explode"}, "drop, rename or retype"),
    ("/api/v1/findings", {"dataset": "nodots"}, "not a dataset address"),
])
def test_lineage_malformed_is_400(client: TestClient, url: str, params: dict[str, str], words: str) -> None:
    response = client.get(url, params=params)
    assert response.status_code == 400 and words in response.json()["error"]


def test_lineage_depth_must_be_a_positive_number(client: TestClient) -> None:
    for depth in ("0", "many"):
        assert client.get(f"/api/v1/lineage/{FLIGHTS}", params={"depth": depth}).status_code == 422


def test_openapi(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["info"]["title"] == "trustmesh"
    assert {"/api/v1/search", "/api/v1/products/{address}", "/api/v1/datasets/{address}/versions"} <= set(doc["paths"])
    assert not any(p.startswith("/products") for p in doc["paths"])  # pages are not API
    assert "/api/v1/datasets/{address}/quality" in doc["paths"]
    schemas = doc["components"]["schemas"]
    assert {"quality_score", "stale"} <= set(schemas["DatasetSummary"]["properties"])
    assert {"quality_score", "quality"} <= set(schemas["Version"]["properties"])
    assert {"quality_score", "stale"} <= set(schemas["Product"]["properties"])
    assert {"quality"} <= set(schemas["DatasetDetail"]["properties"])
    assert {"name", "expected", "samples", "passed"} <= set(schemas["QualityCheck"]["properties"])
    assert {"history", "quarantine", "freshness"} <= set(schemas["QualityReport"]["properties"])
    assert {"/api/v1/lineage/{target}", "/api/v1/impact/{target}", "/api/v1/findings"} <= set(doc["paths"])
    assert {"edges", "datasets", "direction"} <= set(schemas["Lineage"]["properties"])
    assert {"source_dataset", "type", "subtype", "masking", "depth"} <= set(schemas["LineageEdge"]["properties"])
    assert {"datasets", "products", "domains"} <= set(schemas["Impact"]["properties"])
    assert {"kind", "severity", "message"} <= set(schemas["Finding"]["properties"])
    assert client.get("/docs").status_code == 200


# --- pages --------------------------------------------------------------------------------------------------------


def test_search_page_lists_everything_by_domain(client: TestClient) -> None:
    html = client.get("/").text
    assert '<html lang="en">' in html
    assert '<label for="q">' in html and 'id="q"' in html
    assert re.search(r"<h3>bts .*?</h3>.*flights-dp\.flights.*<h3>health .*?</h3>.*patients", html, re.S)
    assert 'href="/products/bts.flights-dp#dataset-flights"' in html
    assert 'href="/?classification=restricted"' in html  # a facet link, with its count next to it
    assert _headings_in_order(html)


def test_search_page_with_query_and_filter(client: TestClient) -> None:
    html = client.get("/", params={"q": "record", "pii": "true"}).text
    assert "Results for “record”" in html
    assert "health.patients-dp.patients" in html and "bts.flights-dp.flights</a>" not in html
    assert 'href="/products/health.patients-dp#column-patients-category"' in html  # the matching PII column
    assert 'aria-current="true"' in html and 'href="/?q=record"' in html  # selected facet links to clearing it
    assert '<input type="hidden" name="pii" value="true">' in html


def test_product_page(client: TestClient) -> None:
    html = client.get("/products/health.patients-dp").text
    assert "<h1>patients-dp" in html
    for text in ("health data owner", "owner@health.gov.sg", "Data domain steward", "dpo@health.gov.sg"):
        assert text in html
    for column in ("record_id", "recorded_on", "category", "amount"):
        assert f'id="column-patients-{column}"' in html
    assert 'class="badge im8 im8-restricted"' in html and "PII: name" in html and "sensitive-normal" in html
    assert 'id="dataset-patients"' in html and "raw_records" in html and "data/records.csv" in html
    assert "Frequency" in html  # the SLA
    assert re.search(r"<th scope=\"row\">1 <span class=\"badge\">served</span></th>\s*<td><time", html)
    assert _headings_in_order(html)


def test_product_page_shows_quality(client: TestClient, mesh: Workspace) -> None:
    score = client.get("/api/v1/datasets/bts.flights-dp.flights/quality").json()["score"]
    html = client.get("/products/bts.flights-dp", headers=bts_steward(mesh)).text
    badge = (f'<span class="badge quality quality-fair" title="Quality score: share of weighted checks passed, '
             f'out of 100">quality {plain(score)} · fair</span>')
    assert html.count(badge) == 4  # the product's facts, the dataset's line, its quality section, its versions
    assert '<span class="badge stale"' in html and "a dataset is past its SLA" in html
    assert "SLA frequency 1 s" in html and "the next version was due" in html
    assert '<table class="checks" aria-labelledby="quality-flights">' in html and '<th scope="col">Expected</th>' in html
    failing = re.search(r'<tr class="failed">\s*<th scope="row">only-alpha</th>(.*?)</tr>', html, re.S)
    assert failing, "the failing warning is a row of the checks table"
    for text in ("contract", "<code>category</code>", "invalidValues", "= 0 rows", "1 row", "fail", "warning"):
        assert text in failing.group(1)
    assert "<summary>Failing rows of “only-alpha” (1 shown, personal data masked)</summary>" in html
    assert re.search(r"<details>.*?<td>2</td><td>beta</td>.*?</details>", html, re.S)
    assert "sector benchmark (transport-tc)" in html
    assert "Quarantined candidates" not in html
    assert _headings_in_order(html)


def test_product_page_shows_quarantine(client: TestClient) -> None:
    html = client.get("/products/health.patients-dp").text
    assert "quality 100 · good" in html and '<span class="badge stale"' not in html
    assert '<span class="badge fresh">fresh</span>' in html and "no dataset past its SLA" in html
    assert '<h4 id="quarantine-patients">Quarantined candidates</h4>' in html
    assert re.search(r"<td>failed: enough-rows</td>\s*<td class=\"num\">3</td>", html)
    assert _headings_in_order(html)


def _lineage_section(html: str, name: str) -> str:
    found = re.search(rf'<h4 id="lineage-{name}">Lineage</h4>(.*?)<h4>Service levels</h4>', html, re.S)
    assert found, f"no lineage section for {name}"
    return found.group(1)


def test_product_page_draws_lineage(client: TestClient) -> None:
    html = client.get("/products/transport-tc.delays-dp").text
    section = _lineage_section(html, "delays")
    picture = re.search(r"<svg .*?</svg>", section, re.S)
    assert picture, "an inline SVG"
    svg = picture.group(0)
    assert '<title id="lineage-delays-title">Lineage of transport-tc.delays-dp.delays: 2 upstream' in svg
    assert '<a href="/products/bts.flights-dp#dataset-flights">' in svg and ">flights</text>" in svg
    assert '<g class="node source">' in svg and '<a href="/products/bts.flights-dp#input-raw_records">' in svg
    assert '<g class="node focus">' in svg and "script" not in svg
    edge_list = re.search(r'<details class="lineage-edges">(.*?)</details>', section, re.S)
    assert edge_list, "the edges as a list"
    assert re.search(r'<a href="/products/bts.flights-dp#dataset-flights"><code>bts.flights-dp.flights</code></a> → '
                     r"<strong><code>transport-tc.delays-dp.delays</code></strong> \(this dataset\)", edge_list.group(1))
    assert "raw_records (source of bts.flights-dp)" in edge_list.group(1)
    columns = re.search(r'<details class="lineage-columns">\s*<summary>Show columns \((\d+) column edges\)</summary>'
                        r"(.*?)</details>", section, re.S)
    assert columns and int(columns.group(1)) == 12  # 8 from flights, 4 from its CSV
    assert re.search(r'<code>bts.flights-dp.flights.category</code></a></td>\s*<th scope="row">'
                     r'<a href="/products/transport-tc.delays-dp#column-delays-record_id"><code>record_id</code></a>'
                     r"</th>\s*<td>INDIRECT</td>\s*<td>Filter</td>", columns.group(2))
    assert "Picture cut" not in section and 'class="findings"' not in html
    assert _headings_in_order(html)


def test_product_page_draws_downstream_and_sources(client: TestClient) -> None:
    html = client.get("/products/bts.flights-dp").text
    svg = re.search(r"<svg .*?</svg>", _lineage_section(html, "flights"), re.S)
    assert svg and "1 upstream and 1 downstream dataset" in svg.group(0)
    assert '<a href="/products/transport-tc.delays-dp#dataset-delays">' in svg.group(0)
    assert '<tr id="input-raw_records">' in html  # where the source node links to


def test_product_page_shows_findings(client: TestClient) -> None:
    html = client.get("/products/health.patients-dp").text
    box = re.search(r'<aside class="findings" aria-labelledby="findings-patients">(.*?)</aside>', html, re.S)
    assert box, "a warning box"
    assert "1 finding on the served version" in box.group(1) and "<strong>No lineage</strong>" in box.group(1)
    assert "COLUMNS(...)" in box.group(1) and 'href="/api/v1/findings?dataset=health.patients-dp.patients"' in box.group(1)
    assert "No column lineage is recorded for the served version (see the findings above)." in html
    assert "<svg" not in html
    assert _headings_in_order(html)


def _edge(source: str, target: str, depth: int, kind: str = "DIRECT", masking: bool = False) -> dict[str, Any]:
    return {"dataset": target, "column": "c", "source_dataset": source, "source_column": "c", "type": kind,
            "subtype": "IDENTITY" if kind == "DIRECT" else "FILTER", "masking": masking, "depth": depth}


def test_lineage_picture_layers_point_right() -> None:
    """a feeds the focus directly and through b: a goes left of b, so every arrow points right."""
    up = [_edge("d.p.a", "d.p.focus", 1), _edge("d.p.b", "d.p.focus", 1, "INDIRECT"), _edge("d.p.a", "d.p.b", 2),
          _edge("source:d.p.raw", "d.p.a", 2, masking=True)]
    down = [_edge("d.p.focus", "e.q.x", 1), _edge("e.q.x", "e.q.y", 2)]
    pic = graph.picture("d.p.focus", up, down)
    layer = {n.id: n.layer for n in pic.nodes}
    assert layer == {"source:d.p.raw": -3, "d.p.a": -2, "d.p.b": -1, "d.p.focus": 0, "e.q.x": 1, "e.q.y": 2}
    assert all(layer[link.source] < layer[link.target] for link in pic.links)
    at = {n.id: n for n in pic.nodes}
    assert all(at[link.source].x < at[link.target].x for link in pic.links) and not pic.cut
    assert [(link.direct, link.masked) for link in pic.links if link.target == "d.p.a"] == [(True, True)]
    svg = str(graph.svg(pic, "t", lambda node: f"/go/{node}"))
    assert svg.count("<a href=") == 5 and svg.count('class="edge indirect"') == 1  # the focus is no link
    assert 'class="edge direct masked"' in svg and svg.startswith("<svg") and "<title id=\"t-title\">" in svg


def test_lineage_picture_is_bounded_and_says_so() -> None:
    up = [_edge(f"u.p.d{i}", "d.p.focus", 1) for i in range(50)] + [_edge("u.p.d0", "d.p.far", 4)]
    pic = graph.picture("d.p.focus", up, [], max_nodes=10, max_column_edges=5)
    assert len(pic.nodes) == 10 and len(pic.column_edges) == 5
    assert pic.cut == ["upstream lineage goes on beyond 3 steps", "showing the 9 nearest of 50 related datasets",
                       "the column table lists the 5 nearest of 9 column edges"]
    assert graph.picture("d.p.focus", [], []).empty and str(graph.svg(graph.picture("d.p.focus", [], []), "t",
                                                                     lambda n: None)) == ""


def test_lineage_picture_escapes_names() -> None:
    pic = graph.picture("d.p.focus", [_edge('d.p."><script>x', "d.p.focus", 1)], [])
    svg = str(graph.svg(pic, "t", lambda node: f"/go?{node}"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and '&#34;&gt;' in svg


def test_search_page_shows_quality(client: TestClient) -> None:
    html = client.get("/").text
    flights = re.search(r"bts\.flights-dp\.flights</a>.*?</article>", html, re.S)
    patients = re.search(r"health\.patients-dp\.patients</a>.*?</article>", html, re.S)
    assert flights and patients
    assert re.search(r"quality [\d.]+ · fair</span> <span class=\"badge stale\"", flights.group(0))
    assert "quality 100 · good" in patients.group(0) and "stale" not in patients.group(0)
    ranked = client.get("/", params={"q": "record"}).text
    assert re.search(r"flights</a></h3>.*?quality [\d.]+ · fair</span> <span class=\"badge stale\"", ranked, re.S)


@pytest.mark.parametrize(("score", "band"), [(None, "none"), (100.0, "good"), (95.0, "good"), (94.9, "fair"),
                                             (80.0, "fair"), (79.9, "poor"), (0.0, "poor")])
def test_quality_bands(score: float | None, band: str) -> None:
    assert quality_band(score) == band


def test_quality_words() -> None:
    assert source_label("benchmark:transport-tc") == "sector benchmark (transport-tc)"
    assert (source_label("schema"), source_label("contract")) == ("schema", "contract")
    assert (plain(3.0), plain(33.3333), plain(None)) == ("3", "33.33", "—")
    assert (age(0.001), age(0.5), age(1.0), age(5.25), age(50)) == (
        "under a minute", "30 minutes", "1 hour", "5.2 hours", "2.1 days")


def test_page_escapes_descriptions(client: TestClient) -> None:
    html = client.get("/products/bts.flights-dp").text
    assert SCRIPT not in html and "<script" not in html
    assert "Flights &lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt; &amp; more." in html


def test_json_twins_equal_the_api(client: TestClient) -> None:
    assert client.get("/products/bts.flights-dp.json").json() == client.get("/api/v1/products/bts.flights-dp").json()
    params = {"q": "record", "classification": "restricted"}
    for twin in ("/.json", "/search.json"):
        page = client.get(twin, params=params).json()
        assert page["search"] == client.get("/api/v1/search", params=params).json()
        assert page["datasets"] == client.get("/api/v1/datasets").json()
    by_domain = client.get("/.json", params={"domain": "bts"}).json()
    assert by_domain["datasets"] == client.get("/api/v1/datasets", params={"domain": "bts"}).json()


def test_dataset_page_goes_to_its_product_section(client: TestClient) -> None:
    response = client.get("/datasets/bts.flights-dp.flights", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/products/bts.flights-dp#dataset-flights"
    response = client.get("/datasets/bts.flights-dp.flights.json", follow_redirects=False)
    assert response.headers["location"] == "/products/bts.flights-dp.json"
    assert client.get("/datasets/bts.flights-dp.flights").text.count('id="dataset-flights"') == 1


def test_page_errors_are_html(client: TestClient) -> None:
    missing = client.get("/products/bts.nope-dp")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert "no product bts.nope-dp in the catalog" in missing.text
    assert client.get("/products/nodots").status_code == 400
    assert client.get("/datasets/bts.flights-dp.nope").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    twin = client.get("/products/bts.nope-dp.json")
    assert twin.status_code == 404 and twin.json()["error"].startswith("no product")


def test_static_stylesheet(client: TestClient) -> None:
    response = client.get("/static/trustmesh.css")
    assert response.status_code == 200 and ":focus-visible" in response.text


def test_app_from_environment(mesh: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTMESH_MESH", str(mesh.root))
    with TestClient(app_from_environment()) as c:
        assert c.get("/api/v1/health").json()["domains"] == 3


def _headings_in_order(html: str) -> bool:
    """One h1 first, and no heading more than one level deeper than the one before it."""
    levels = [int(n) for n in re.findall(r"<h([1-6])[ >]", html)]
    return levels[0] == 1 and levels.count(1) == 1 and all(b - a <= 1 for a, b in itertools.pairwise(levels))


# --- signing in ---------------------------------------------------------------------------------------------------


def sign_in(browser: TestClient, token: str, next_url: str | None = None) -> Any:
    """Post the sign-in form as a browser does: from the sign-in page, with its CSRF value (and cookie)."""
    page = browser.get("/login")
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found, "the sign-in form carries a CSRF value"
    return browser.post("/login", data={"token": token, "csrf": found.group(1),
                                        **({"next": next_url} if next_url is not None else {})})


@pytest.fixture
def anonymous(mesh: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(mesh), follow_redirects=False) as c:
        yield c


@pytest.mark.parametrize("url", ["/api/v1/datasets", "/api/v1/search?q=x", "/api/v1/products/bts.flights-dp",
                                 "/api/v1/lineage/bts.flights-dp.flights", "/api/v1/findings"])
def test_the_catalog_api_needs_a_token(anonymous: TestClient, url: str) -> None:
    response = anonymous.get(url)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized" and body["instance"] == url.split("?")[0]
    assert "fix" in body["detail"] and body["error"] == body["detail"]
    assert anonymous.get(url, headers={"Authorization": "Bearer tmk_forged"}).status_code == 401


def test_health_needs_no_token(anonymous: TestClient) -> None:
    assert anonymous.get("/api/v1/health").json()["status"] == "ok"


def test_problem_details_for_every_api_error(client: TestClient) -> None:
    missing = client.get("/api/v1/datasets/bts.flights-dp.nope")
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["title"] == "Not Found" and "bts.flights-dp.nope" in missing.json()["detail"]
    invalid = client.get("/api/v1/search", params={"limit": "many"})
    assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/problem+json"
    assert invalid.json()["problems"][0]["path"] == "query.limit" and "limit" in invalid.json()["detail"]
    unknown = client.get("/api/v1/no-such-thing")
    assert unknown.status_code == 404 and "/docs" in unknown.json()["detail"]
    wrong_method = client.delete("/api/v1/datasets")
    assert wrong_method.status_code == 405 and "DELETE" in wrong_method.json()["detail"]


def test_pages_send_strangers_to_sign_in_and_back(anonymous: TestClient, token: str) -> None:
    page = anonymous.get("/products/bts.flights-dp?x=1")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fproducts%2Fbts.flights-dp%3Fx%3D1"
    login = anonymous.get(page.headers["location"])
    assert login.status_code == 200 and 'name="token"' in login.text and "Signed in as" not in login.text
    assert 'value="/products/bts.flights-dp?x=1"' in login.text
    signed_in = sign_in(anonymous, token, "/products/bts.flights-dp?x=1")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/products/bts.flights-dp?x=1"
    cookie = signed_in.headers["set-cookie"]
    assert "trustmesh_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    product = anonymous.get("/products/bts.flights-dp")
    assert product.status_code == 200 and "Signed in as" in product.text and "Governance Admin" in product.text


def test_a_refused_token_stays_on_the_sign_in_page(anonymous: TestClient, mesh: Workspace) -> None:
    refused = sign_in(anonymous, "tmk_nothing", "/")
    assert refused.status_code == 401 and "unknown API token" in refused.text
    assert "trustmesh_session" not in refused.headers.get("set-cookie", "")
    assert mesh.audit.log("gdo-admin", type="auth.refused", limit=1)


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"])
def test_sign_in_only_returns_to_this_site(anonymous: TestClient, token: str, target: str) -> None:
    response = sign_in(anonymous, token, target)
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_a_revoked_token_ends_the_session(anonymous: TestClient, mesh: Workspace) -> None:
    value, info = mesh.tokens.issue("gdo-admin", "gdo-admin", name="short-lived", days=1)
    assert sign_in(anonymous, value).status_code == 303
    assert anonymous.get("/").status_code == 200
    mesh.tokens.revoke("gdo-admin", info["id"])
    ended = anonymous.get("/")
    assert ended.status_code == 303 and ended.headers["location"] == "/login?next=%2F&ended=1"
    assert 'trustmesh_session=""' in ended.headers["set-cookie"] or "Max-Age=0" in ended.headers["set-cookie"]
    assert "session ended" in anonymous.get(ended.headers["location"]).text


def test_sign_out_needs_the_forms_csrf_value(anonymous: TestClient, token: str) -> None:
    sign_in(anonymous, token)
    page = anonymous.get("/").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf, "every signed-in page has the sign-out form"
    forged = anonymous.post("/logout", data={"csrf": "0" * 32})
    assert forged.status_code == 403
    assert anonymous.get("/").status_code == 200  # still signed in
    out = anonymous.post("/logout", data={"csrf": csrf.group(1)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert anonymous.get("/").status_code == 303
