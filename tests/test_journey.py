"""The developer's journey through the CLI, other input kinds, and the standards the project bundles."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from meshfactory import base_files, write_files
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.metastore import HEAD_REVISION
from trustmesh.service import Workspace

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
STANDARDS = REPO.parent / "shared" / "standards"
SHOP = "domains/alpha/products/shop-dp"


def run(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    return result


def test_init_new_validate_build_search_show(tmp_path: Path) -> None:
    mesh = tmp_path / "my-mesh"
    assert run("init", str(mesh)).exit_code == 0
    assert run("new", "domain", "bts", "--kind", "ssot", "--sector", "transport", "--mesh", str(mesh)).exit_code == 0
    assert run("new", "product", "bts/flights-dp", "--mesh", str(mesh)).exit_code == 0
    validated = run("validate", "--json", "--mesh", str(mesh))
    assert validated.exit_code == 0, validated.output
    assert json.loads(validated.stdout) == {"ok": True, "problems": []}
    built = run("build", "--json", "--mesh", str(mesh))
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["products"][0]["versions"] == {"bts.flights-dp.flights": 1}
    found = run("search", "record", "--json", "--mesh", str(mesh))
    assert "bts.flights-dp.flights" in {h["address"] for h in json.loads(found.stdout)["hits"]}
    shown = run("catalog", "show", "bts.flights-dp.flights", "--json", "--mesh", str(mesh))
    assert json.loads(shown.stdout)["current_version"]["rows"] == 3
    again = run("build", "--json", "--mesh", str(mesh))
    assert json.loads(again.stdout)["products"][0]["status"] == "skipped"
    versions = run("catalog", "versions", "bts.flights-dp.flights", "--json", "--mesh", str(mesh))
    assert [v["version"] for v in json.loads(versions.stdout)] == [1]


def test_scaffold_refuses_bad_names_and_existing_things(tmp_path: Path) -> None:
    assert run("init", str(tmp_path)).exit_code == 0
    assert run("init", str(tmp_path)).exit_code == 2
    assert run("new", "domain", "Bad Name", "--mesh", str(tmp_path)).exit_code == 2
    assert run("new", "product", "nodomain/x-dp", "--mesh", str(tmp_path)).exit_code == 2
    assert run("new", "product", "justone", "--mesh", str(tmp_path)).exit_code == 2


def test_help_teaches_with_examples() -> None:
    for command in (["build"], ["search"], ["catalog", "show"], ["new", "product"], ["validate"], ["demo"]):
        result = run(*command, "--help")
        assert result.exit_code == 0
        assert "Example" in result.output, command


def test_database_source_is_landed_and_rebuilt_only_when_it_changes(make_mesh: Any, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "legacy.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE items (item_id INTEGER, name TEXT, price REAL, sold_on TEXT)")
    con.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", [(1, "apple", 1.5, "2024-01-01"), (2, "pear", 2.0, "2024-01-02")])
    con.commit()
    monkeypatch.setenv("ALPHA_LEGACY_DB_URL", f"sqlite:///{db}")
    files = base_files()
    files[f"{SHOP}/product.yaml"]["inputPorts"][0]["customProperties"][0]["value"] = {
        "type": "database", "urlEnv": "ALPHA_LEGACY_DB_URL", "table": "items"}
    files[f"{SHOP}/sql/items.sql"] = "SELECT item_id, name, price, CAST(sold_on AS DATE) AS sold_on FROM raw_items"
    ws = make_mesh(files)
    assert ws.build().ok
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 2
    assert {r.status for r in ws.build().products} == {"skipped"}
    con.execute("INSERT INTO items VALUES (3, 'plum', 0.5, '2024-01-03')")
    con.commit()
    con.close()
    result = ws.build()
    assert result.products[0].status == "published"
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 3
    assert not any("legacy.db" in str(p) for p in Path(ws.root).rglob("*.yaml"))  # the URL never enters the repo


def test_database_source_without_its_variable(make_mesh: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHA_NO_SUCH_DB_URL", raising=False)
    files = base_files()
    files[f"{SHOP}/product.yaml"]["inputPorts"][0]["customProperties"][0]["value"] = {
        "type": "database", "urlEnv": "ALPHA_NO_SUCH_DB_URL", "table": "items"}
    ws = make_mesh(files)
    result = ws.build("alpha")
    assert result.products[0].status == "failed"
    assert "ALPHA_NO_SUCH_DB_URL" in result.products[0].problems[0].fix


def test_glob_sources_read_every_matching_file(make_mesh: Any) -> None:
    files = base_files()
    files[f"{SHOP}/product.yaml"]["inputPorts"][0]["customProperties"][0]["value"] = {
        "type": "file", "format": "csv", "path": "data/items-*.csv"}
    files[f"{SHOP}/data/items.csv"] = None
    files[f"{SHOP}/data/items-1.csv"] = "item_id,name,price,sold_on\n1,apple,1.5,2024-01-01\n"
    files[f"{SHOP}/data/items-2.csv"] = "item_id,name,price,sold_on\n2,pear,2.0,2024-01-02\n"
    ws = make_mesh(files)
    assert ws.build().ok
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 2
    write_files(ws.root, {f"{SHOP}/data/items-3.csv": "item_id,name,price,sold_on\n3,plum,0.5,2024-01-02\n"})
    assert ws.build().products[0].status == "published"
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 3


def test_bundled_standards_are_the_official_copies() -> None:
    if not STANDARDS.is_dir():
        pytest.skip(f"the shared standards folder {STANDARDS} is not beside the repo")
    bundled = REPO / "src" / "trustmesh" / "standards"
    for rel in ("odcs/odcs-json-schema-v3.1.0.json", "odps/odps-json-schema-v1.0.0.json"):
        assert (bundled / Path(rel).name).read_bytes() == (STANDARDS / rel).read_bytes()
    for official in (STANDARDS / "openlineage").glob("*.json"):
        assert (bundled / "openlineage" / official.name).read_bytes() == official.read_bytes()


def test_head_revision_is_alembics_head() -> None:
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(resources.files("trustmesh.metastore").joinpath("migrations")))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_workspace_reads_settings_from_mesh_yaml(make_mesh: Any, tmp_path: Path) -> None:
    files = base_files()
    files["mesh.yaml"]["platform"] = {"metastore": f"sqlite:///{tmp_path / 'elsewhere' / 'm.db'}",
                                      "warehouse": str(tmp_path / "wh")}
    ws: Workspace = make_mesh(files)
    assert ws.build().ok
    assert (tmp_path / "elsewhere" / "m.db").exists()
    assert list((tmp_path / "wh").rglob("*.parquet"))


def test_the_readmes_start_your_own_mesh_runs_as_written(tmp_path: Path) -> None:
    """The README's commands, pasted into a shell in the checkout after `make demo` (which made .venv): a newcomer
    with nothing on their PATH but the system's gets a built mesh, and no command is missing."""
    import os
    import re
    import subprocess

    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("Start your own mesh"):]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "the README shows the commands of `Start your own mesh` in a code block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]
    assert commands[0].startswith("source .venv/bin/activate"), "it first says how `trustmesh` gets on the PATH"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}  # no trustmesh on the PATH
    env |= {k: v for k, v in os.environ.items() if k.startswith("TRUSTMESH_TEST")}
    done = subprocess.run(["bash", "-e", "-c", "\n".join(commands)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "my-mesh" / "domains" / "bts" / "products" / "flights-dp" / "product.yaml").is_file()
    assert "bts.flights-dp.flights" in done.stdout
