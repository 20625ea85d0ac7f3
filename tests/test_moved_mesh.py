"""A mesh folder (the repo and its .trustmesh/) keeps working when it is moved, copied or restored elsewhere.

Iceberg names every file by an absolute path, so each test takes the original away before the copy is used:
the copy skips what is unchanged, rebuilds what changed with its downstream, and reads — now and at past
versions, through the catalog and the gateway — its own files, never the original's.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from meshfactory import (
    ITEMS,
    ITEMS_CSV,
    METASTORE_TIER,
    base_files,
    column,
    contract_yaml,
    governed_demo,
    write_files,
)
from sqlalchemy.engine import make_url

from trustmesh.metastore.storage import Warehouse
from trustmesh.service import Workspace

STATS = "beta.stats-dp.daily_sales"
Q_STATS = 'SELECT * FROM beta."stats-dp".daily_sales ORDER BY sold_on'
SHOP = "domains/alpha/products/shop-dp"
STATS_SQL = "domains/beta/products/stats-dp/sql/daily_sales.sql"


def copy_away(ws: Workspace, target: Path, *, move: bool = False) -> Workspace:
    """`cp -a` (or `mv`) the mesh folder to `target`, delete the original, and open the copy on the same
    metastore (inside the folder, or the same database outside it)."""
    source, url = ws.root, ws.metastore_url
    ws.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mv" if move else "cp", *([] if move else ["-a"]), str(source), str(target)], check=True)
    shutil.rmtree(source, ignore_errors=True)
    parsed = make_url(url)
    inside = parsed.get_backend_name() == "sqlite" and Path(parsed.database or "").is_relative_to(source)
    return Workspace.open(target, metastore_url=None if inside else url)


def rows(ws: Workspace, address: str, version: int | None = None) -> list[dict[str, Any]]:
    return list(ws.catalog.read(address, version).to_pylist())


def statuses(ws: Workspace) -> dict[str, str]:
    result = ws.build()
    assert result.ok, [p.to_dict() for p in result.products]
    return {p.address: p.status for p in result.products}


def all_files(ws: Workspace, address: str) -> list[str]:
    return [f for v in ws.catalog.versions(address) for f in ws.catalog.version_files(address, v["version"])[1]]


def assert_only_under(ws: Workspace, *addresses: str) -> None:
    """Every version's data files are the copy's own."""
    for address in addresses:
        files = all_files(ws, address)
        assert files and all(Path(f).is_relative_to(ws.root) and Path(f).is_file() for f in files), files


def test_a_copied_mesh_skips_rebuilds_and_reads_its_own_files(make_mesh: Any, tmp_path: Path) -> None:
    ws: Workspace = make_mesh(base_files())
    assert ws.build().ok
    items, stats = rows(ws, ITEMS), rows(ws, STATS)
    queried = ws.query("beta-dev", Q_STATS).table.to_pylist()
    original = ws.root

    copy = copy_away(ws, tmp_path / "restored" / "mesh-copy")
    try:
        assert not original.exists()
        # (a) nothing changed: nothing is rebuilt, no --full needed
        assert statuses(copy) == {"alpha.shop-dp": "skipped", "beta.stats-dp": "skipped"}
        # (c) the catalog and the gateway read the copy's files
        assert rows(copy, ITEMS) == items and rows(copy, STATS) == stats
        assert copy.query("beta-dev", Q_STATS).table.to_pylist() == queried
        assert_only_under(copy, ITEMS, STATS)

        # (b) a change downstream rebuilds only it, reading the upstream's snapshot from the copy
        (copy.root / STATS_SQL).write_text((copy.root / STATS_SQL).read_text() + "-- per day\n")
        assert statuses(copy) == {"alpha.shop-dp": "skipped", "beta.stats-dp": "published"}
        assert rows(copy, STATS) == stats
        # a change upstream rebuilds it and its downstream
        (copy.root / SHOP / "data/items.csv").write_text(ITEMS_CSV + "4,fig,3.0,2024-01-03\n")
        assert statuses(copy) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}
        assert len(rows(copy, ITEMS)) == 4 and len(rows(copy, STATS)) == 3

        # (d) time travel reads the versions the original published, from the copy
        assert rows(copy, ITEMS, 1) == items and rows(copy, STATS, 1) == stats
        past = 'SELECT * FROM beta."stats-dp".daily_sales AT (VERSION => 1) ORDER BY sold_on'
        assert copy.query("beta-dev", past).table.to_pylist() == queried
        assert_only_under(copy, ITEMS, STATS)
        assert not original.exists()  # nothing was written where the mesh used to be
    finally:
        copy.close()


@pytest.mark.skipif(METASTORE_TIER == "postgresql", reason="a copy beside its original needs a metastore of its own")
def test_a_copy_beside_its_original_never_touches_it(make_mesh: Any, tmp_path: Path) -> None:
    ws: Workspace = make_mesh(base_files())
    assert ws.build().ok
    original = ws.root
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    before = sorted(p for p in (original / ".trustmesh" / "warehouse").rglob("*") if "tmp" not in p.parts)
    beside = Workspace.open(copy)
    try:
        (copy / SHOP / "data/items.csv").write_text(ITEMS_CSV + "4,fig,3.0,2024-01-03\n")
        assert statuses(beside) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}
        assert len(rows(beside, ITEMS)) == 4
        assert_only_under(beside, ITEMS, STATS)
    finally:
        beside.close()
    after = sorted(p for p in (original / ".trustmesh" / "warehouse").rglob("*") if "tmp" not in p.parts)
    assert after == before
    assert [v["version"] for v in ws.catalog.versions(ITEMS)] == [1] and len(rows(ws, ITEMS)) == 3


def test_a_mesh_moved_twice_reads_tables_made_in_each_place(make_mesh: Any, tmp_path: Path) -> None:
    """Tables created before the first move and after it, and snapshots added in between, all stay readable."""
    ws: Workspace = make_mesh(base_files())
    assert ws.build().ok
    items = rows(ws, ITEMS)

    second = copy_away(ws, tmp_path / "second", move=True)
    (second.root / SHOP / "data/items.csv").write_text(ITEMS_CSV + "4,fig,3.0,2024-01-03\n")
    product = second.root / SHOP / "product.yaml"
    product.write_text(product.read_text().replace(
        "outputPorts:\n", "outputPorts:\n- name: item_count\n  version: 1.0.0\n  contractId: alpha.shop-dp.item_count\n"))
    write_files(second.root, {
        f"{SHOP}/sql/item_count.sql": "SELECT count(*) AS items FROM raw_items\n",
        f"{SHOP}/contracts/item_count.odcs.yaml": contract_yaml("alpha", "shop-dp", "item_count",
                                                                [column("items", "integer")]),
    })
    assert statuses(second) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}

    third = copy_away(second, tmp_path / "third")
    try:
        assert statuses(third) == {"alpha.shop-dp": "skipped", "beta.stats-dp": "skipped"}
        assert rows(third, ITEMS, 1) == items and len(rows(third, ITEMS)) == 4
        assert rows(third, "alpha.shop-dp.item_count") == [{"items": 4}]
        assert_only_under(third, ITEMS, STATS, "alpha.shop-dp.item_count")
    finally:
        third.close()


def test_a_moved_mesh_whose_metastore_is_outside_the_folder(make_mesh: Any, metastore_url: str,
                                                            tmp_path: Path) -> None:
    """The metastore (a SQLite file elsewhere, or PostgreSQL) stays; the folder with the warehouse moves."""
    ws: Workspace = make_mesh(base_files(), metastore_url=metastore_url)
    assert ws.build().ok
    stats = rows(ws, STATS)
    moved = copy_away(ws, tmp_path / "moved", move=True)
    try:
        assert moved.metastore_url == metastore_url
        assert statuses(moved) == {"alpha.shop-dp": "skipped", "beta.stats-dp": "skipped"}
        assert rows(moved, STATS) == stats
        (moved.root / SHOP / "data/items.csv").write_text(ITEMS_CSV + "4,fig,3.0,2024-01-03\n")
        assert statuses(moved) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}
        assert rows(moved, STATS, 1) == stats and len(rows(moved, STATS)) == 3
        assert_only_under(moved, ITEMS, STATS)
    finally:
        moved.close()


def test_a_folder_named_with_a_space_keeps_its_iceberg_metadata_inside(make_mesh: Any, tmp_path: Path) -> None:
    ws: Workspace = make_mesh(base_files())  # grants made; moved before anything is built
    spaced = copy_away(ws, tmp_path / "my meshes é" / "shop 100%20")
    assert spaced.build().ok
    assert list((spaced.warehouse / "alpha.shop-dp" / "items" / "metadata").glob("*.metadata.json"))
    assert not [p for p in tmp_path.rglob("*") if "%20" in p.name and p.name != "shop 100%20"]
    items = rows(spaced, ITEMS)

    copy = copy_away(spaced, tmp_path / "copy #2")
    try:
        assert statuses(copy) == {"alpha.shop-dp": "skipped", "beta.stats-dp": "skipped"}
        assert rows(copy, ITEMS) == items
        assert_only_under(copy, ITEMS, STATS)
    finally:
        copy.close()


def test_a_mesh_built_before_relocation_works_in_place_and_moved(make_mesh: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Meshes built by earlier releases name their warehouse by a file:// URI and record absolute data files."""
    with monkeypatch.context() as old:
        old.setattr(Warehouse, "location", property(lambda w: w.remote or w.local.resolve().as_uri()))
        old.setattr(Warehouse, "recorded", lambda w, stored: stored)
        ws: Workspace = make_mesh(base_files())
        assert ws.build().ok
        ws.close()
    legacy = Workspace.open(ws.root, metastore_url=ws.metastore_url)  # in place, by this release
    assert legacy.iceberg().load_table(("alpha", "shop-dp", "items")).location().startswith("file://")
    items, stats = rows(legacy, ITEMS), rows(legacy, STATS)
    assert statuses(legacy) == {"alpha.shop-dp": "skipped", "beta.stats-dp": "skipped"}
    (legacy.root / SHOP / "data/items.csv").write_text(ITEMS_CSV + "4,fig,3.0,2024-01-03\n")
    assert statuses(legacy) == {"alpha.shop-dp": "published", "beta.stats-dp": "published"}

    copy = copy_away(legacy, tmp_path / "legacy-copy")
    try:
        assert statuses(copy) == {"alpha.shop-dp": "skipped", "beta.stats-dp": "skipped"}
        assert rows(copy, ITEMS, 1) == items and rows(copy, STATS, 1) == stats and len(rows(copy, ITEMS)) == 4
        assert_only_under(copy, ITEMS, STATS)
    finally:
        copy.close()


@pytest.mark.slow
def test_the_demo_restored_from_a_backup_elsewhere(tmp_path: Path) -> None:
    ws = governed_demo(tmp_path / "demo")
    served = {address: rows(ws, address) for address in sorted(ws.mesh.datasets)}
    original = ws.root
    copy = copy_away(ws, tmp_path / "backup" / "demo")
    try:
        assert not original.exists()
        result = copy.build()
        assert result.ok and {p.status for p in result.products} == {"skipped"}, result.to_dict()
        assert {address: rows(copy, address) for address in served} == served
        assert_only_under(copy, *served)
    finally:
        copy.close()
