"""The build: publish, skip when unchanged, versions readable later, atomic across a product, crash-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from meshfactory import ITEMS_CSV, write_files

from trustmesh.errors import InvalidMesh

SHOP = "domains/alpha/products/shop-dp"


def statuses(result: Any) -> dict[str, str]:
    return {r.address: r.status for r in result.products}


def test_build_publishes_every_product_in_dependency_order(make_mesh: Any) -> None:
    ws = make_mesh()
    result = ws.build()
    assert result.ok
    assert [r.address for r in result.products] == ["alpha.shop-dp", "beta.stats-dp"]
    assert statuses(result) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}
    daily = ws.catalog.read("beta.stats-dp.daily_sales").to_pylist()
    assert sorted((str(r["sold_on"]), r["items"], r["revenue"]) for r in daily) == [
        ("2024-01-01", 1, 1.5), ("2024-01-02", 2, 2.5)]
    assert ws.catalog.show("alpha.shop-dp.items")["current_version"]["rows"] == 3


def test_unchanged_rebuild_does_no_work(make_mesh: Any) -> None:
    ws = make_mesh()
    ws.build()
    again = ws.build()
    assert statuses(again) == {"alpha.shop-dp": "skipped", "beta.stats-dp": "skipped"}
    assert [v["version"] for v in ws.catalog.versions("alpha.shop-dp.items")] == [1]
    forced = ws.build(full=True)
    assert set(statuses(forced).values()) == {"published"}
    assert [v["version"] for v in ws.catalog.versions("alpha.shop-dp.items")] == [2, 1]


def test_changed_source_publishes_new_version_and_earlier_version_stays_readable(make_mesh: Any) -> None:
    ws = make_mesh()
    ws.build()
    write_files(ws.root, {f"{SHOP}/data/items.csv": ITEMS_CSV + "4,fig,3.0,2024-01-03\n"})
    result = ws.build()
    assert statuses(result) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 4
    assert ws.catalog.read("alpha.shop-dp.items", version=1).num_rows == 3
    assert sorted(r["item_id"] for r in ws.catalog.read("alpha.shop-dp.items", version=1).to_pylist()) == [1, 2, 3]
    versions = ws.catalog.versions("beta.stats-dp.daily_sales")
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["inputs"]["items"]["version"] == 2


def test_publish_is_atomic_across_a_product(make_mesh: Any, files: dict[str, Any]) -> None:
    ws = make_mesh(files)
    ws.build()
    # The second dataset now violates its primary key: neither dataset of the product may move on.
    write_files(ws.root, {
        f"{SHOP}/data/items.csv": ITEMS_CSV + "4,fig,0.2,2024-01-03\n",
        f"{SHOP}/sql/cheap_items.sql": "SELECT 1 AS item_id, name FROM raw_items WHERE price < 1.8\n",
    })
    result = ws.build()
    assert statuses(result) == {"alpha.shop-dp": "failed", "beta.stats-dp": "blocked"}
    failed = result.products[0]
    assert any("'primary key (item_id) is unique' failed" in p.message for p in failed.problems)
    assert [v["version"] for v in ws.catalog.versions("alpha.shop-dp.items")] == [1]
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 3


def _build_in_subprocess(root: Path, fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRUSTMESH_FAULT": fault} if fault else dict(os.environ)
    env.pop("TRUSTMESH_FAULT", None) if not fault else None
    return subprocess.run([sys.executable, "-m", "trustmesh", "build", "--mesh", str(root), "--full"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fault", ["publish.after-snapshot", "publish.before-record", "publish.before-commit"])
def test_build_killed_mid_publish_leaves_previous_versions_and_rerun_succeeds(make_mesh: Any, fault: str) -> None:
    ws = make_mesh()
    ws.build()
    ws.close()
    write_files(ws.root, {f"{SHOP}/data/items.csv": ITEMS_CSV + "4,fig,3.0,2024-01-03\n"})
    killed = _build_in_subprocess(ws.root, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    from trustmesh.service import Workspace

    after = Workspace.open(ws.root)
    try:
        for address in ("alpha.shop-dp.items", "alpha.shop-dp.cheap_items", "beta.stats-dp.daily_sales"):
            assert [v["version"] for v in after.catalog.versions(address)] == [1], address
        assert after.catalog.read("alpha.shop-dp.items").num_rows == 3
    finally:
        after.close()
    rerun = _build_in_subprocess(ws.root, None)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    final = Workspace.open(ws.root)
    try:
        assert final.catalog.read("alpha.shop-dp.items").num_rows == 4
        assert [v["version"] for v in final.catalog.versions("alpha.shop-dp.items")] == [2, 1]
    finally:
        final.close()


def test_selector_builds_upstream_with_plus(make_mesh: Any) -> None:
    ws = make_mesh()
    only = ws.build("beta.stats-dp")
    assert statuses(only) == {"beta.stats-dp": "failed"}
    assert "has no published version" in only.products[0].message
    both = ws.build("+beta.stats-dp")
    assert statuses(both) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}


def test_invalid_mesh_builds_nothing(make_mesh: Any, files: dict[str, Any]) -> None:
    files[f"{SHOP}/sql/items.sql"] = "SELECT item_id, name, price FROM raw_items\n"
    ws = make_mesh(files)
    with pytest.raises(InvalidMesh) as info:
        ws.build()
    assert "sold_on" in str(info.value)
    assert ws.catalog.datasets() == []


def test_breaking_contract_change_needs_a_major_version(make_mesh: Any, files: dict[str, Any]) -> None:
    ws = make_mesh(files)
    assert ws.build().ok
    contract = files[f"{SHOP}/contracts/cheap_items.odcs.yaml"]
    contract["schema"][0]["properties"] = contract["schema"][0]["properties"][:1]  # drop `name`
    write_files(ws.root, {f"{SHOP}/contracts/cheap_items.odcs.yaml": contract,
                          f"{SHOP}/sql/cheap_items.sql": "SELECT item_id FROM raw_items WHERE price < 1.8\n"})
    problems = [p for p in ws.validate() if "without a major version bump" in p.message]
    assert problems and "name" in problems[0].message and "2.0.0" in problems[0].fix
    with pytest.raises(InvalidMesh, match="without a major version bump"):
        ws.build()
    assert [v["version"] for v in ws.catalog.versions("alpha.shop-dp.cheap_items")] == [1]
    contract["version"] = "2.0.0"
    write_files(ws.root, {f"{SHOP}/contracts/cheap_items.odcs.yaml": contract})
    assert ws.build().ok
    assert ws.catalog.show("alpha.shop-dp.cheap_items")["contract_version"] == "2.0.0"


def test_a_failed_product_leaves_no_unpublished_candidates(make_mesh: Any, files: dict[str, Any]) -> None:
    ws = make_mesh(files)
    assert ws.build().ok
    published = set((ws.root / ".trustmesh" / "warehouse" / "data").rglob("*.parquet"))
    write_files(ws.root, {f"{SHOP}/sql/cheap_items.sql": "SELECT 1 AS item_id, name FROM raw_items\n"})
    assert not ws.build().ok
    assert set((ws.root / ".trustmesh" / "warehouse" / "data").rglob("*.parquet")) == published


def test_every_build_emits_valid_openlineage_run_events(make_mesh: Any, files: dict[str, Any]) -> None:
    import json

    from trustmesh.standards import validator

    ws = make_mesh(files)
    assert ws.build().ok
    write_files(ws.root, {f"{SHOP}/sql/cheap_items.sql": "SELECT 1 AS item_id, name FROM raw_items\n"})
    assert not ws.build().ok
    lines = (ws.root / ".trustmesh" / "openlineage" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    check = validator("openlineage/OpenLineage.json")
    for event in events:
        assert not list(check.iter_errors(event)), event["eventType"]
    kinds = [(e["job"]["name"], e["eventType"]) for e in events]
    assert kinds == [("alpha.shop-dp", "START"), ("alpha.shop-dp", "COMPLETE"), ("beta.stats-dp", "START"),
                     ("beta.stats-dp", "COMPLETE"), ("alpha.shop-dp", "START"), ("alpha.shop-dp", "FAIL")]
    complete = events[3]
    [output] = complete["outputs"]
    assert output["name"] == "beta.stats-dp.daily_sales"
    fields = output["facets"]["columnLineage"]["fields"]
    assert fields["revenue"]["inputFields"][0]["name"] == "alpha.shop-dp.items"
    assert fields["revenue"]["inputFields"][0]["field"] == "price"
    assert complete["inputs"][0]["name"] == "alpha.shop-dp.items"
