"""The metastore on both backends (SQLite, and PostgreSQL when it answers), for real: a migration from the
first schema with data in it, and several workspaces working on one metastore at the same moment."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshfactory import base_files, column, contract_yaml, domain_yaml, file_input, product_yaml
from sqlalchemy import text

from trustmesh.catalog import Catalog
from trustmesh.errors import Conflict
from trustmesh.metastore import HEAD_REVISION, Metastore
from trustmesh.service import Workspace

ITEMS = "alpha.shop-dp.items"
FLEET = "domains/gamma/products/fleet-dp"
TIMEOUT = 120


def run_together(*actions: Callable[[], Any]) -> list[tuple[str, Any]]:
    """Run the actions in threads released by one barrier; each outcome is ("ok", value) or ("error", exc)."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[tuple[str, Any]] = [("unfinished", None)] * len(actions)

    def run(i: int, action: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcomes[i] = ("ok", action())
        except BaseException as exc:  # every failure is collected and judged by the test
            outcomes[i] = ("error", exc)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread did not finish in time"
    return outcomes


def statuses(result: Any) -> dict[str, str]:
    return {r.address: r.status for r in result.products}


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# -- 1. migrations ----------------------------------------------------------------------------------------


def test_upgrade_from_the_first_schema_keeps_its_rows(metastore_url: str) -> None:
    store = Metastore.open(metastore_url, migrate=False)
    try:
        assert store.revision() is None
        store.upgrade("0001")
        assert store.revision() == "0001"
        now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        with store.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO tm_domains (name, kind, sector, description, glossary) "
                "VALUES ('alpha', 'ssot', 'transport', 'The alpha domain.', :glossary)"),
                {"glossary": json.dumps([{"term": "alpha-term", "definition": "A term."}])})
            conn.execute(text(
                "INSERT INTO tm_products (address, domain, name, kind, tier, status, version, description, tags, "
                "team, inputs, descriptor, fingerprint, built_at) VALUES ('alpha.shop-dp', 'alpha', 'shop-dp', "
                "'source-aligned', 'bronze', 'active', '1.0.0', :description, '[]', '{}', '[]', '{}', 'f00d', :at)"),
                {"description": json.dumps({"purpose": "The shop."}), "at": now})
            conn.execute(text(
                "INSERT INTO tm_datasets (address, product, domain, name, description, contract, contract_version, "
                "classification, sensitivity, has_pii, iceberg_table, current_version) VALUES (:ds, "
                "'alpha.shop-dp', 'alpha', 'items', 'The items.', '{}', '1.0.0', 'official-open', "
                "'non-sensitive', :false, 'alpha.items', 1)"), {"ds": ITEMS, "false": False})
            conn.execute(text(
                "INSERT INTO tm_builds (id, started_at, finished_at, status, selector, \"full\") "
                "VALUES ('b1', :at, :at, 'ok', '', :false)"), {"at": now, "false": False})
            conn.execute(text(
                "INSERT INTO tm_dataset_versions (dataset, version, snapshot_id, build_id, row_count, published_at, "
                "contract_version, columns, data_files, inputs) VALUES (:ds, 1, 42, 'b1', 3, :at, '1.0.0', "
                "'[]', '[]', '{}')"), {"ds": ITEMS, "at": now})
            conn.execute(text(
                "INSERT INTO tm_search_docs (kind, address, dataset, product, domain, sector, product_kind, "
                "classification, sensitivity, has_pii, title, body) VALUES ('dataset', :ds, :ds, 'alpha.shop-dp', "
                "'alpha', 'transport', 'source-aligned', 'official-open', 'non-sensitive', :false, 'items', "
                "'Zanzibar fruit sold in the shop')"), {"ds": ITEMS, "false": False})

        store.upgrade()
        assert store.revision() == HEAD_REVISION

        with store.engine.connect() as conn:
            assert [(n, k, as_json(g)) for n, k, g in conn.execute(text("SELECT name, kind, glossary FROM tm_domains"))
                    ] == [("alpha", "ssot", [{"term": "alpha-term", "definition": "A term."}])]
            assert conn.execute(text("SELECT address, fingerprint FROM tm_products")).all() == [
                ("alpha.shop-dp", "f00d")]
            assert conn.execute(text("SELECT address, current_version FROM tm_datasets")).all() == [(ITEMS, 1)]
            [(score, quality, rows)] = conn.execute(text(
                "SELECT quality_score, quality, row_count FROM tm_dataset_versions")).all()
        # The columns 0002 added to an existing row: no score, and the server default for the summary.
        assert (score, as_json(quality), rows) == (None, {}, 3)

        catalog = Catalog(store, lambda: None)
        assert [(d["name"], d["products"]) for d in catalog.domains()] == [("alpha", 1)]
        [version] = catalog.versions(ITEMS)
        assert (version["version"], version["rows"], version["quality_score"], version["quality"]) == (1, 3, None, {})
        found = catalog.search("zanzibar")
        assert [h["address"] for h in found["hits"]] == [ITEMS]

        store.upgrade()  # a second upgrade at head changes nothing
        store.upgrade("head")
        assert store.revision() == HEAD_REVISION
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM tm_dataset_versions")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        store.dispose()


def test_opening_twice_migrates_once(metastore_url: str) -> None:
    first = Metastore.open(metastore_url)
    second = Metastore.open(metastore_url)
    try:
        assert first.revision() == second.revision() == HEAD_REVISION
        second.upgrade()
        assert first.revision() == HEAD_REVISION
    finally:
        first.dispose()
        second.dispose()


# -- 2. two builds at once --------------------------------------------------------------------------------


def three_products() -> dict[str, Any]:
    """The base mesh and gamma.fleet-dp, a source product that shares nothing with alpha.shop-dp."""
    files = base_files()
    files["domains/gamma/domain.yaml"] = domain_yaml("gamma")
    files[f"{FLEET}/product.yaml"] = product_yaml("gamma", "fleet-dp", ["buses"],
                                                  [file_input("raw_buses", "data/buses.csv")])
    files[f"{FLEET}/data/buses.csv"] = "bus_id,depot\n1,north\n2,south\n3,north\n4,east\n"
    files[f"{FLEET}/sql/buses.sql"] = "SELECT bus_id, depot FROM raw_buses\n"
    files[f"{FLEET}/contracts/buses.odcs.yaml"] = contract_yaml("gamma", "fleet-dp", "buses", [
        column("bus_id", "integer", required=True, primaryKey=True, primaryKeyPosition=1),
        column("depot", "string"),
    ])
    return files


def build_two_at_once(root: Path, url: str, first: str, second: str) -> tuple[Any, Any]:
    """Build two selectors at the same moment, each from its own Workspace on the same repo and metastore."""
    left = Workspace.open(root, metastore_url=url)
    right = Workspace.open(root, metastore_url=url)
    try:
        outcomes = run_together(lambda: left.build(first), lambda: right.build(second))
    finally:
        left.close()
        right.close()
    errors = [f"{type(v).__name__}: {v}" for kind, v in outcomes if kind != "ok"]
    assert not errors, errors
    return outcomes[0][1], outcomes[1][1]


def problems(result: Any) -> list[str]:
    return [p.message for r in result.products for p in r.problems]


def test_two_builds_of_different_products_at_once(make_mesh: Any, metastore_url: str) -> None:
    """alpha.shop-dp first; then beta.stats-dp (reading it) and gamma.fleet-dp (independent) together."""
    ws = make_mesh(three_products(), metastore_url=metastore_url)
    assert {"alpha.shop-dp", "beta.stats-dp", "gamma.fleet-dp"} == set(ws.mesh.products)
    assert statuses(ws.build("alpha.shop-dp")) == {"alpha.shop-dp": "published"}

    stats, fleet = build_two_at_once(ws.root, metastore_url, "beta.stats-dp", "gamma.fleet-dp")
    assert statuses(stats) == {"beta.stats-dp": "published"}, problems(stats)
    assert statuses(fleet) == {"gamma.fleet-dp": "published"}, problems(fleet)

    published = {d["address"]: d for d in ws.catalog.datasets()}
    expected = {ITEMS: 3, "alpha.shop-dp.cheap_items": 2, "beta.stats-dp.daily_sales": 2, "gamma.fleet-dp.buses": 4}
    assert {a: (d["version"], d["rows"]) for a, d in published.items()} == {a: (1, n) for a, n in expected.items()}
    for address, rows in expected.items():
        assert ws.catalog.read(address).num_rows == rows
    assert {r.address: r.status for r in ws.build().products} == dict.fromkeys(sorted(ws.mesh.products), "skipped")


def test_the_first_two_builds_on_a_fresh_metastore_at_once(make_mesh: Any, metastore_url: str) -> None:
    ws = make_mesh(three_products(), metastore_url=metastore_url)
    shop, fleet = build_two_at_once(ws.root, metastore_url, "alpha.shop-dp", "gamma.fleet-dp")
    assert statuses(shop) == {"alpha.shop-dp": "published"}, problems(shop)
    assert statuses(fleet) == {"gamma.fleet-dp": "published"}, problems(fleet)
    assert {d["address"] for d in ws.catalog.datasets()} == {ITEMS, "alpha.shop-dp.cheap_items",
                                                             "gamma.fleet-dp.buses"}


# -- 3. two approvers at once -----------------------------------------------------------------------------


def test_two_approvers_of_one_request_at_once_make_one_grant(make_mesh: Any, metastore_url: str) -> None:
    ws = make_mesh(base_files(), metastore_url=metastore_url, grants=False)
    req = ws.access.request("beta-dev", ITEMS, purpose="Quarterly sales report to the Ministry",
                            purpose_category="statistics", days=30)
    assert req["state"] == "pending" and req["levels"] == 1
    steward = Workspace.open(ws.root, metastore_url=metastore_url)
    owner = Workspace.open(ws.root, metastore_url=metastore_url)
    try:
        outcomes = run_together(lambda: steward.access.approve("alpha-steward", req["id"], note="steward"),
                                lambda: owner.access.approve("alpha-owner", req["id"], note="owner"))
    finally:
        steward.close()
        owner.close()

    won = [v for kind, v in outcomes if kind == "ok"]
    lost = [v for kind, v in outcomes if kind != "ok"]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert won[0]["state"] == "approved" and won[0]["grant"]
    assert type(lost[0]) is Conflict, f"{type(lost[0]).__name__}: {lost[0]}"
    assert req["id"] in str(lost[0])

    everything = ws.access.overview("gdo", "all")
    assert [(r["id"], r["state"]) for r in everything["requests"]] == [(req["id"], "approved")]
    assert len(everything["requests"][0]["approvals"]) == 1
    assert [g["id"] for g in everything["grants"]] == [won[0]["grant"]]
    assert len(ws.audit.log("gdo", type="access.approved", limit=None)) == 1
    assert len(ws.audit.log("gdo", type="grant.created", limit=None)) == 1
    assert len(ws.audit.log("gdo", type="access.refused", limit=None)) == 1
    verified = ws.audit.verify()
    assert verified["ok"] is True, verified


# -- 4. search while building -----------------------------------------------------------------------------


def test_search_while_a_build_publishes(make_mesh: Any, metastore_url: str) -> None:
    ws = make_mesh(metastore_url=metastore_url)
    builder = Workspace.open(ws.root, metastore_url=metastore_url)
    searcher = Workspace.open(ws.root, metastore_url=metastore_url)
    done = threading.Event()
    searches: list[int] = []

    def build() -> Any:
        try:
            return builder.build()
        finally:
            done.set()

    def search() -> int:
        while True:
            finished = done.is_set()
            result = searcher.catalog.search("items")
            assert set(result) >= {"hits", "total", "facets"}
            searches.append(result["total"])
            if finished:
                return len(searches)

    try:
        outcomes = run_together(build, search)
    finally:
        builder.close()
        searcher.close()
    errors = [repr(v) for kind, v in outcomes if kind != "ok"]
    assert not errors, errors
    (_, result), (_, count) = outcomes
    assert statuses(result) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}
    assert count >= 1
    hits = ws.catalog.search("items")["hits"]
    assert ITEMS in {h["address"] for h in hits}
    assert any(h["address"] == ITEMS and h["kind"] == "dataset" for h in hits)
