"""The catalog on the demo mesh and on both metastores: search with facets, show, versions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meshfactory import ITEMS_CSV, write_files
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.demo import write_demo
from trustmesh.demo.access import seed_access
from trustmesh.errors import NotFound, UsageError
from trustmesh.service import Workspace

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("demo") / "mesh"
    write_demo(root)
    ws = Workspace.open(root)
    seed_access(ws)
    result = ws.build()
    assert result.ok, [r.to_dict() for r in result.products if r.status != "published"]
    yield ws
    ws.close()


def test_demo_has_enough_products_and_domains(demo: Workspace) -> None:
    mesh = demo.mesh
    assert len(mesh.products) >= 8 and len(mesh.domains) >= 6
    kinds = {p.kind for p in mesh.products.values()}
    assert kinds == {"source-aligned", "aggregated", "consumer-aligned"}
    assert {d.kind for d in mesh.domains.values()} == {"ssot", "trusted-centre"}
    for domain in mesh.domains.values():
        for role in ("data-owner", "data-domain-steward", "data-product-owner", "developer"):
            assert domain.people_in_role(role), (domain.name, role)


def test_search_flight_delay_finds_the_flights_dataset(demo: Workspace) -> None:
    result = demo.catalog.search("flight delay")
    datasets = [h["address"] for h in result["hits"] if h["kind"] == "dataset"]
    assert datasets[0] == "bts.flights-dp.flights"
    assert result["facets"]["domain"]["bts"] >= 1


def test_search_nric_finds_the_nric_columns(demo: Workspace) -> None:
    result = demo.catalog.search("nric")
    columns = {h["address"] for h in result["hits"] if h["kind"] == "column"}
    assert "health.activity-dp.participants.nric" in columns
    assert "commuter.trips-dp.commuters.nric" in columns
    assert all(h["has_pii"] for h in result["hits"] if h["kind"] == "column" and h["address"].endswith(".nric"))


def test_search_facet_filters(demo: Workspace) -> None:
    pii = demo.catalog.search("", has_pii=True, limit=100)["hits"]
    assert pii and all(h["has_pii"] for h in pii)
    assert {h["domain"] for h in pii} == {"health", "commuter"}
    tc = demo.catalog.search("delay", domain="transport-tc")["hits"]
    assert tc and {h["domain"] for h in tc} == {"transport-tc"}
    assert demo.catalog.search("delay", sector="health")["hits"] == []
    with pytest.raises(UsageError):
        demo.catalog.search("x", colour="red")


def test_show_has_owners_schema_classification_and_version(demo: Workspace) -> None:
    info = demo.catalog.show("health.activity-dp.participants")
    assert info["has_pii"] and info["classification"] in ("restricted", "confidential")
    nric = next(c for c in info["columns"] if c["name"] == "nric")
    assert nric["pii_type"] == "nric" and nric["sensitivity"] == "sensitive-high"
    assert info["owners"]["data-owner"] and info["owners"]["data-domain-steward"]
    assert info["current_version"]["version"] == 1 and info["current_version"]["rows"] == 3000
    # the port-qualified form names the same dataset
    assert demo.catalog.show("health.activity-dp.participants.participants")["address"] == info["address"]
    with pytest.raises(NotFound, match="no dataset"):
        demo.catalog.show("health.activity-dp.nothing")


def test_cli_catalog_and_search_json(demo: Workspace) -> None:
    listed = runner.invoke(app, ["catalog", "list", "--json", "--mesh", str(demo.root)])
    assert listed.exit_code == 0
    assert len(json.loads(listed.stdout)) == len(demo.mesh.datasets)
    found = runner.invoke(app, ["search", "flight delay", "--json", "--mesh", str(demo.root)])
    assert json.loads(found.stdout)["hits"][0]["address"].startswith("bts.flights-dp.flights")
    shown = runner.invoke(app, ["catalog", "show", "bts.flights-dp.flights", "--mesh", str(demo.root)])
    assert shown.exit_code == 0 and "dep_delay" in shown.stdout
    missing = runner.invoke(app, ["catalog", "show", "bts.flights-dp.nope", "--mesh", str(demo.root)])
    assert missing.exit_code == 1
    bad = runner.invoke(app, ["catalog", "versions", "nodots", "--mesh", str(demo.root)])
    assert bad.exit_code == 2


def test_demo_catalog_shows_quality_scores(demo: Workspace) -> None:
    listed = demo.catalog.datasets()
    assert all(d["quality_score"] is not None for d in listed)
    trips = next(d for d in listed if d["address"] == "commuter.trips-dp.trips")
    assert trips["quality_score"] < 100  # the transport benchmark flags its local-time timestamps
    checks = demo.catalog.show("commuter.trips-dp.trips")["quality"]["checks"]
    assert any(c["source"] == "benchmark:transport-tc" and not c["passed"] for c in checks)


def test_demo_rebuild_does_no_work(demo: Workspace) -> None:
    again = demo.build()
    assert {r.status for r in again.products} == {"skipped"}


@pytest.fixture(params=["sqlite", "postgresql"])
def metastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_metastore_backends_build_version_and_search(make_mesh: Any, metastore_url: str) -> None:
    ws = make_mesh(metastore_url=metastore_url)
    assert ws.store.dialect == metastore_url.split(":")[0].split("+")[0]
    assert ws.build().ok
    write_files(ws.root, {"domains/alpha/products/shop-dp/data/items.csv": ITEMS_CSV + "4,fig,3.0,2024-01-03\n"})
    assert ws.build().ok
    assert [v["version"] for v in ws.catalog.versions("alpha.shop-dp.items")] == [2, 1]
    assert ws.catalog.read("alpha.shop-dp.items", version=1).num_rows == 3
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 4
    hits = ws.catalog.search("price")["hits"]
    assert "alpha.shop-dp.items.price" in {h["address"] for h in hits}
    assert ws.catalog.search("daily sales")["hits"][0]["address"] == "beta.stats-dp.daily_sales"
    assert {r.status for r in ws.build().products} == {"skipped"}
    # reopening runs migrations again harmlessly and sees the same catalog
    again = Workspace.open(ws.root, metastore_url=metastore_url)
    assert len(again.catalog.datasets()) == 3
    again.close()


def test_losing_the_metastore_is_a_clear_error(make_mesh: Any, postgres_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from trustmesh.errors import MetastoreUnavailable

    ws = make_mesh(metastore_url=postgres_url)
    assert ws.build().ok
    name = make_url(postgres_url).database
    admin = create_engine(make_url(postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
    try:
        with pytest.raises(MetastoreUnavailable, match="lost the metastore"):
            ws.catalog.datasets()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_upgrade_from_the_first_schema_keeps_the_data(metastore_url: str) -> None:
    from sqlalchemy import text

    from trustmesh.metastore import HEAD_REVISION, Metastore

    store = Metastore.open(metastore_url, migrate=False)
    store.upgrade("0001")
    assert store.revision() == "0001"
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO tm_products (address, domain, name, kind, tier, status, version, description, "
                          "tags, team, inputs, descriptor) VALUES ('a.p', 'a', 'p', 'source-aligned', 'gold', 'active', "
                          "'1', '{}', '[]', '[]', '[]', '{}')"))
        conn.execute(text("INSERT INTO tm_datasets (address, product, domain, name, description, contract, "
                          "contract_version, sensitivity, has_pii, iceberg_table, current_version) VALUES "
                          "('a.p.d', 'a.p', 'a', 'd', '', '{}', '1.0.0', 'non-sensitive', false, 'a.p.d', 1)"))
        conn.execute(text("INSERT INTO tm_dataset_versions (dataset, version, snapshot_id, build_id, row_count, "
                          "published_at, contract_version, columns, data_files, inputs) VALUES "
                          "('a.p.d', 1, 42, 'b1', 7, '2026-01-01 00:00:00', '1.0.0', '[]', '[]', '{}')"))
    store.upgrade()
    assert store.revision() == HEAD_REVISION
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT row_count, quality_score, quality FROM tm_dataset_versions")).one()
        assert row[0] == 7 and row[1] is None
        assert conn.execute(text("SELECT count(*) FROM tm_quality_results")).scalar() == 0
    store.dispose()
