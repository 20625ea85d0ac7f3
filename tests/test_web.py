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

from trustmesh.scaffold import init_mesh, new_domain, new_product
from trustmesh.service import Workspace
from trustmesh.web.app import app_from_environment, create_app
from trustmesh.web.pages import age, plain, quality_band, source_label
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


def _impossible_row_count(contract: dict[str, Any]) -> None:
    contract["schema"][0]["quality"] = [{"metric": "rowCount", "mustBeGreaterThan": 100, "severity": "error",
                                         "name": "enough-rows"}]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """bts.flights-dp (official-open, hostile description, a failing warning, stale, the transport-tc benchmark)
    and health.patients-dp (one restricted PII column; a second build quarantined by a failing error)."""
    root = tmp_path_factory.mktemp("mesh")
    init_mesh(root)
    new_domain(root, "bts", "ssot", "transport")
    _edit_yaml(new_domain(root, "transport-tc", "trusted-centre", "transport"), _transport_benchmark)
    _edit_yaml(new_product(root, "bts", "flights-dp"), _hostile_description)
    _edit_yaml(root / "domains/bts/products/flights-dp/contracts/flights.odcs.yaml", _only_alpha_hourly)
    new_domain(root, "health", "ssot", "health")
    new_product(root, "health", "patients-dp")
    patients = root / "domains/health/products/patients-dp/contracts/patients.odcs.yaml"
    _edit_yaml(patients, _personal_category)
    ws = Workspace.open(root)
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
def client(mesh: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(mesh)) as c:
        yield c


# --- API ----------------------------------------------------------------------------------------------------------


def test_health(client: TestClient) -> None:
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok" and body["metastore"] == "sqlite" and body["domains"] == 3


def test_domains(client: TestClient) -> None:
    domains = client.get("/api/v1/domains").json()
    assert [(d["name"], d["sector"], d["products"]) for d in domains] == [
        ("bts", "transport", 1), ("health", "health", 1), ("transport-tc", "transport", 0)]


def test_datasets_all_and_by_domain(client: TestClient) -> None:
    every = client.get("/api/v1/datasets").json()
    assert [d["address"] for d in every] == ["bts.flights-dp.flights", "health.patients-dp.patients"]
    assert every[0]["rows"] == 3 and every[0]["version"] == 1
    assert [(d["stale"], d["quality_score"] < 100) for d in every] == [(True, True), (False, False)]
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


def test_quality(client: TestClient) -> None:
    quality = client.get("/api/v1/datasets/bts.flights-dp.flights/quality").json()
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
    assert result["facets"]["domain"] == {"bts": 1, "health": 1}
    assert result["facets"]["classification"] == {"official-open": 1, "restricted": 1}
    assert result["facets"]["has_pii"] == {"false": 1, "true": 1}
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
    assert [h["address"] for h in sector["hits"]] == ["bts.flights-dp.flights"]
    assert sector["filters"] == {"sector": "transport"}  # an empty field means "any"
    limited = client.get("/api/v1/search", params={"q": "record", "limit": 1}).json()
    assert len(limited["hits"]) == 1 and limited["total"] > 1


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


def test_product_page_shows_quality(client: TestClient) -> None:
    score = client.get("/api/v1/datasets/bts.flights-dp.flights/quality").json()["score"]
    html = client.get("/products/bts.flights-dp").text
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
