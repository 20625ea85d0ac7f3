"""Every CLI command, given bad input, says what is wrong and exits 1 (a problem) or 2 (bad usage): never a
Python traceback. The commands are found by walking the CLI, so a new one is tried as soon as it exists."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import typer.main
from meshfactory import base_files, product_input, write_files
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.service import Workspace

runner = CliRunner()
# An ODCS contract that imports well, for `contract import`.
CONTRACT = (Path(__file__).parents[1] / "src" / "trustmesh" / "demo" / "mesh" / "domains" / "carriers" / "products"
            / "airlines-dp" / "contracts" / "airlines.odcs.yaml")
STATS = "domains/beta/products/stats-dp"
SHOP = "domains/alpha/products/shop-dp"


def _commands() -> dict[str, Any]:
    """Every leaf command of the CLI: 'access request' → its click command."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), [*path, name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


COMMANDS = _commands()
# A well-formed value for each argument, so that the one bad input a case makes is the one that is wrong.
ARGUMENTS = {"sql": "SELECT item_id FROM alpha.shop-dp.items", "address": "alpha.shop-dp.items",
             "target": "alpha.shop-dp.items", "selector": "alpha", "product": "alpha.shop-dp",
             "principal": "gdo", "person": "gdo", "request_id": "req-1", "grant_id": "grant-1", "text": "items",
             "name": "gamma", "file": str(CONTRACT), "directory": "new-mesh"}
# Options a command cannot do without, with a well-formed value.
REQUIRED = {"access request": ["--purpose", "Compare item prices across shops", "--purpose-category", "analytics",
                               "--days", "30"],
            "privacy kanon": ["--quasi", "name"], "audit checkpoint": ["--reason", "a new anchor"],
            "access reject": ["--reason", "not needed"], "access revoke": ["--reason", "not needed"]}
SPECIFIC = {("new product", "target"): "alpha/new-dp"}
NO_MESH = {"init", "demo"}  # they make a mesh
SCAFFOLDS = {"new domain", "new product", "contract import"}  # they write files into the mesh without reading mesh.yaml


def _argv(name: str, **values: str) -> list[str]:
    command = COMMANDS[name]
    argv = name.split()
    for param in command.params:
        if param.param_type_name == "argument" and (param.required or param.name in values):
            argv.append(values.get(param.name, SPECIFIC.get((name, param.name), ARGUMENTS.get(param.name, "x"))))
    return argv + REQUIRED.get(name, [])


def _options(name: str) -> set[str]:
    return {opt for p in COMMANDS[name].params for opt in p.opts}


def _assert_refused(result: Any, argv: list[str], codes: tuple[int, ...] = (1, 2)) -> None:
    shown = f"`trustmesh {' '.join(argv)}` exited {result.exit_code}:\n{result.output[-1500:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{shown}\nraised {type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.output, shown
    assert result.exit_code in codes, shown
    assert result.output.strip(), f"{shown}\n(it said nothing)"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built two-domain mesh: its people exist, its datasets are served."""
    from meshfactory import grant_product_inputs, tier_metastore

    files = base_files()
    tier_metastore(files["mesh.yaml"])
    root = write_files(tmp_path_factory.mktemp("bad-input") / "mesh", files)
    ws = Workspace.open(root)
    grant_product_inputs(ws)
    assert ws.build().ok
    ws.close()
    return root


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_bad_option_is_bad_usage(name: str) -> None:
    argv = [*_argv(name), "--no-such-option"]
    _assert_refused(runner.invoke(app, argv), argv, (2,))


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if n not in NO_MESH and "--mesh" in _options(n)))
def test_a_missing_mesh_is_named(name: str, tmp_path: Path) -> None:
    argv = [*_argv(name), "--mesh", str(tmp_path / "no-such-mesh")]
    result = runner.invoke(app, argv)
    _assert_refused(result, argv)
    assert "no-such-mesh" in result.output or "mesh.yaml" in result.output, result.output


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if n not in NO_MESH | SCAFFOLDS and "--mesh" in _options(n)))
def test_bad_yaml_is_named(name: str, built: Path, tmp_path: Path) -> None:
    files = copy.deepcopy(base_files())
    files["mesh.yaml"] = "name: test-mesh\npeople: [\n"
    root = write_files(tmp_path / "mesh", files)
    argv = [*_argv(name), "--mesh", str(root)]
    result = runner.invoke(app, argv)
    _assert_refused(result, argv)
    assert "mesh.yaml" in result.output, result.output


# `serve` serves a mesh whose files have problems (its pages show them), so on a cycle it would not return.
@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if n not in NO_MESH | {"serve"} and "--mesh" in _options(n)))
def test_a_cycle_is_reported_not_raised(name: str, tmp_path: Path) -> None:
    """alpha.shop-dp reads beta.stats-dp, which reads alpha.shop-dp."""
    files = copy.deepcopy(base_files())
    files[f"{SHOP}/product.yaml"]["inputPorts"].append(product_input("beta.stats-dp.daily_sales"))
    root = write_files(tmp_path / "mesh", files)
    argv = [*_argv(name), "--mesh", str(root)]
    result = runner.invoke(app, argv)
    planned = name in {"validate", "build", "check"}
    _assert_refused(result, argv, (1,) if planned else (0, 1, 2))
    if planned:
        assert "cycle" in result.output, result.output
        assert "FAILED: 0 product" not in result.output, result.output


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if "--as" in _options(n)))
def test_an_unknown_person_is_refused(name: str, built: Path) -> None:
    argv = [*_argv(name), "--as", "no-such-person", "--mesh", str(built)]
    result = runner.invoke(app, argv)
    _assert_refused(result, argv)


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if {"address", "target", "product"}
                                        & {p.name for p in COMMANDS[n].params if p.param_type_name == "argument"}))
def test_a_bad_address_is_refused(name: str, built: Path) -> None:
    bad = {p.name: "alpha.no-such-dp.nothing" for p in COMMANDS[name].params if p.param_type_name == "argument"
           and p.name in ("address", "target", "product")}
    argv = [*_argv(name, **bad), "--mesh", str(built)]
    if "--as" in _options(name):
        argv += ["--as", "gdo"]
    result = runner.invoke(app, argv)
    _assert_refused(result, argv)


@pytest.mark.parametrize("argv", [
    ["query", "SELEC item_id FROM alpha.shop-dp.items"],
    ["query", "SELECT item_id FROM alpha.shop-dp.items WHERE"],
    ["query", "DROP TABLE alpha.shop-dp.items"],
    ["query", ""],
    ["privacy", "kanon", "--sql", "SELECT FROM WHERE", "--quasi", "name"],
], ids=["typo", "unfinished", "write", "empty", "kanon"])
def test_bad_sql_is_refused(argv: list[str], built: Path) -> None:
    full = [*argv, "--as", "gdo", "--mesh", str(built)]
    _assert_refused(runner.invoke(app, full), full)
