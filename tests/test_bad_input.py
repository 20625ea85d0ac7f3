"""Every bad input gets a clear problem naming file, line or path, and the fix; nothing is published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from meshfactory import ITEMS_CSV, base_files, contract_yaml, product_input, write_files
from typer.testing import CliRunner

from trustmesh.cli import app
from trustmesh.errors import MetastoreUnavailable
from trustmesh.service import Workspace

SHOP = "domains/alpha/products/shop-dp"
STATS = "domains/beta/products/stats-dp"
runner = CliRunner()


def _set(files: dict[str, Any], key: str, mutate: Any) -> None:
    mutate(files[key])


CASES: dict[str, tuple[Any, str, str]] = {
    # name: (mutation of the files dict, file the problem names, words in the message)
    "malformed yaml": (lambda f: f.update({f"{SHOP}/product.yaml": "apiVersion: v1.0.0\nkind: [DataProduct\n"}),
                       f"{SHOP}/product.yaml", "malformed YAML"),
    "unknown key in mesh.yaml": (lambda f: f["mesh.yaml"].update({"platfrom": {}}), "mesh.yaml", "unknown key 'platfrom'"),
    "missing key in domain.yaml": (lambda f: f["domains/alpha/domain.yaml"].pop("kind"),
                                   "domains/alpha/domain.yaml", "missing required key 'kind'"),
    "unknown key in product (ODPS)": (lambda f: f[f"{SHOP}/product.yaml"].update({"owner": "me"}),
                                      f"{SHOP}/product.yaml", "'owner' was unexpected"),
    "contract fails ODCS": (lambda f: f[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"][0]
                            .update({"logicalType": "int"}), f"{SHOP}/contracts/items.odcs.yaml", "'int' is not one of"),
    "no contract for an output": (lambda f: f.update({f"{SHOP}/contracts/cheap_items.odcs.yaml": None}),
                                  f"{SHOP}/product.yaml", "no contract"),
    "sql does not parse": (lambda f: f.update({f"{SHOP}/sql/items.sql": "SELECT item_id,\n  FROM FROM raw_items\n"}),
                           f"{SHOP}/sql/items.sql", "SQL does not parse"),
    "sql misses a contract column": (lambda f: f.update({f"{SHOP}/sql/items.sql": "SELECT item_id, name, price FROM raw_items"}),
                                     f"{SHOP}/sql/items.sql", "no column 'sold_on'"),
    "sql has the wrong type": (lambda f: f.update({f"{SHOP}/sql/items.sql":
                                                   "SELECT item_id, name, name AS price, sold_on FROM raw_items"}),
                               f"{SHOP}/sql/items.sql", "column 'price' is VARCHAR (string) but the contract says number"),
    "duplicate address": (lambda f: f[f"{SHOP}/product.yaml"]["outputPorts"].append(
        dict(f[f"{SHOP}/product.yaml"]["outputPorts"][0])), f"{SHOP}/product.yaml", "duplicate address alpha.shop-dp.items"),
    "reference to a missing product": (lambda f: f[f"{STATS}/product.yaml"].update(
        {"inputPorts": [product_input("alpha.shopp-dp.items", "items")]}), f"{STATS}/product.yaml", "no product publishes"),
    "missing source file": (lambda f: f.update({f"{SHOP}/data/items.csv": None}), f"{SHOP}/product.yaml",
                            "source file domains/alpha/products/shop-dp/data/items.csv not found"),
    "sql reads an undeclared input": (lambda f: f.update({f"{STATS}/sql/daily_sales.sql":
                                                          'SELECT sold_on, count(*) AS items, sum(price) AS revenue '
                                                          'FROM alpha."shop-dp".cheap_items GROUP BY sold_on'}),
                                      f"{STATS}/sql/daily_sales.sql", "not an input port"),
    "sql writes": (lambda f: f.update({f"{SHOP}/sql/items.sql": "DELETE FROM raw_items"}), f"{SHOP}/sql/items.sql",
                   "only a read-only query"),
    "unknown glossary term": (lambda f: f[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"][2]
                              ["customProperties"][0].update({"value": "prize"}), f"{SHOP}/contracts/items.odcs.yaml",
                              "glossary term 'prize' is not defined"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_reported_with_location_and_fix(make_mesh: Any, case: str) -> None:
    mutate, file, words = CASES[case]
    files = base_files()
    mutate(files)
    ws = make_mesh(files)
    problems = [p for p in ws.validate() if p.severity == "error"]
    matching = [p for p in problems if words in p.message]
    assert matching, f"{case}: expected {words!r} in {[str(p) for p in problems]}"
    assert matching[0].file == file
    assert matching[0].fix
    result = runner.invoke(app, ["build", "--mesh", str(ws.root)])
    assert result.exit_code == 1, result.output
    assert words in " ".join(result.output.split())
    assert list((ws.root / ".trustmesh").rglob("*.parquet")) == []  # nothing landed, nothing published


def test_problems_carry_lines_and_readable_paths(make_mesh: Any) -> None:
    files = base_files()
    files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"][1]["classification"] = "secretive"
    ws = make_mesh(files)
    [problem] = [p for p in ws.validate() if "secretive" in p.message]
    assert problem.path == "schema[items].properties[name].classification"
    text = (ws.root / problem.file).read_text().splitlines()
    assert problem.line is not None and "secretive" in text[problem.line - 1]
    sql = [p for p in make_mesh({**base_files(), f"{SHOP}/sql/items.sql": "SELECT item_id\nFROM raw_items\nWHERE (\n"})
           .validate() if "does not parse" in p.message]
    assert sql and sql[0].line is not None and sql[0].line >= 3


def test_all_problems_are_reported_at_once(make_mesh: Any) -> None:
    files = base_files()
    files["mesh.yaml"]["platfrom"] = {}
    files[f"{SHOP}/product.yaml"]["owner"] = "me"
    files["domains/beta/domain.yaml"]["kind"] = "agency"
    problems = make_mesh(files).validate()
    assert {p.file for p in problems} >= {"mesh.yaml", f"{SHOP}/product.yaml", "domains/beta/domain.yaml"}


def test_cycle_is_named(make_mesh: Any) -> None:
    files = base_files()
    shop = files[f"{SHOP}/product.yaml"]
    shop["inputPorts"].append(product_input("beta.stats-dp.daily_sales"))
    problems = make_mesh(files).validate()
    [cycle] = [p for p in problems if "cycle" in p.message]
    assert "alpha.shop-dp" in cycle.message and "beta.stats-dp" in cycle.message


@pytest.mark.parametrize("content, words, options", [
    (ITEMS_CSV + '5,"unterminated,1.0,2024-01-05\n', "CSV", None),
    (ITEMS_CSV + "6,kiwi,1.0,2024-01-06,surplus\n", "CSV", None),
    (ITEMS_CSV + "6,kiwi,notanumber,2024-01-06\n", "notanumber", {"types": {"price": "DOUBLE"}}),
    (ITEMS_CSV.encode() + b"7,caf\xe9,1.0,2024-01-07\n", "not UTF-8", None),
])
def test_bad_csv_fails_the_build_and_keeps_the_previous_version(make_mesh: Any, content: Any, words: str,
                                                                options: Any) -> None:
    files = base_files()
    if options:
        files[f"{SHOP}/product.yaml"]["inputPorts"][0]["customProperties"][0]["value"]["options"] = options
    ws = make_mesh(files)
    assert ws.build().ok
    write_files(ws.root, {f"{SHOP}/data/items.csv": content})
    result = runner.invoke(app, ["build", "--mesh", str(ws.root)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert words.lower() in text.lower(), text
    assert "items.csv" in text
    assert [v["version"] for v in ws.catalog.versions("alpha.shop-dp.items")] == [1]


ITEMS = f"{SHOP}/data/items.csv"
QUOTED = ITEMS_CSV + '6,"kiwi, surplus",1.0,2024-01-06\n'
UNREADABLE_CSV: dict[str, tuple[Any, int | None, str, str, dict[str, Any] | None, Any]] = {
    # name: (file content, line of the problem, words in its message, words in its fix,
    #        the source options the fix names (None: the file itself is fixed), the fixed file)
    "row with extra fields": (ITEMS_CSV + "6,kiwi,1.0,2024-01-06,surplus\n", 5,
                              "line 5 has 5 fields where the header has 4: 6,kiwi,1.0,2024-01-06,surplus",
                              "a value holding ',' is quoted", None, QUOTED),
    "';' delimiter": (ITEMS_CSV.replace(",", ";"), 1, "its 4 fields are separated by ';'",
                      "add `options: {delim: ';'}` to the source of inputPorts[raw_items]", {"delim": ";"}, None),
    "Latin-1": ((ITEMS_CSV + "4,café,1.0,2024-01-04\n").encode("latin-1"), 5, "line 5 is not UTF-8: byte 0xe9",
                "add `options: {encoding: latin-1}`", {"encoding": "latin-1"}, None),
    "UTF-16": (ITEMS_CSV.encode("utf-16"), 1, "the file is UTF-16 text, not UTF-8",
               "add `options: {encoding: utf-16}`", {"encoding": "utf-16"}, None),
    "header only": ("item_id,name,price,sold_on\n", 1, "the file has a header line but no rows", "add its rows",
                    None, ITEMS_CSV),
    "empty file": ("", None, "the file is empty", "put the data in it", None, ITEMS_CSV),
}


@pytest.mark.parametrize("case", list(UNREADABLE_CSV))
def test_unreadable_csv_is_one_problem_at_its_line_with_the_option_that_fixes_it(make_mesh: Any, case: str) -> None:
    """validate, build and check say what is wrong with the file, where, and the fix, once; the fix then builds."""
    content, line, words, fix, options, fixed = UNREADABLE_CSV[case]
    files = base_files()
    files[ITEMS] = content
    ws = make_mesh(files)
    [problem] = ws.validate()  # one problem, not one per dataset reading the source, nor the SQL's after it
    assert (problem.file, problem.line, problem.severity) == (ITEMS, line, "error"), problem
    assert words in problem.message and fix in problem.fix, problem
    if options is not None:  # the fix names where the option goes: the source's line in product.yaml
        descriptor = f"{SHOP}/product.yaml"
        at = int(problem.fix.split(f"({descriptor}:")[1].split(")")[0])
        assert "value:" in (ws.root / descriptor).read_text().splitlines()[at - 1]
    for command in (["validate"], ["build"], ["check"]):
        result = runner.invoke(app, [*command, "--mesh", str(ws.root)])
        text = " ".join(result.output.split())
        assert result.exit_code == 1, text
        assert text.count(words) == 1 and f"{ITEMS}{'' if line is None else f':{line}'}" in text, text
        for dump in ("Error:", "sniff", "Possible fixes", "strict_mode", "in__raw_items", "does not exist"):
            assert dump not in text, (dump, text)
    if options is not None:
        files[f"{SHOP}/product.yaml"]["inputPorts"][0]["customProperties"][0]["value"]["options"] = options
    else:
        files[ITEMS] = fixed
    write_files(ws.root, {ITEMS: files[ITEMS], f"{SHOP}/product.yaml": files[f"{SHOP}/product.yaml"]})
    result = runner.invoke(app, ["build", "--mesh", str(ws.root)])
    assert result.exit_code == 0, result.output
    names = ws.catalog.read("alpha.shop-dp.items").column("name").to_pylist()
    assert {"Latin-1": "café", "row with extra fields": "kiwi, surplus"}.get(case, "apple") in names


def _typo_in_the_upstream_address(files: dict[str, Any], sql_too: bool = False) -> None:
    files[f"{STATS}/product.yaml"]["inputPorts"] = [product_input("alpha.shop-dp.itemz", "items")]
    if sql_too:
        files[f"{STATS}/sql/daily_sales.sql"] = files[f"{STATS}/sql/daily_sales.sql"].replace(".items", ".itemz")


ROOT_CAUSES: dict[str, tuple[Any, str, str, str]] = {
    # name: (mutation, file of the one problem, its message, its fix)
    "source path typo": (lambda f: f[f"{SHOP}/product.yaml"]["inputPorts"][0]["customProperties"][0]["value"]
                         .update({"path": "data/item.csv"}), f"{SHOP}/product.yaml",
                         f"source file {SHOP}/data/item.csv not found", "did you mean `path: data/items.csv`?"),
    "upstream address typo": (_typo_in_the_upstream_address, f"{STATS}/product.yaml",
                              "input port reads 'alpha.shop-dp.itemz', which no product publishes",
                              "did you mean 'alpha.shop-dp.items'?"),
    "upstream address typo, in the SQL too": (lambda f: _typo_in_the_upstream_address(f, sql_too=True),
                                              f"{STATS}/product.yaml", "input port reads 'alpha.shop-dp.itemz', which "
                                              "no product publishes", "did you mean 'alpha.shop-dp.items'?"),
}


@pytest.mark.parametrize("case", list(ROOT_CAUSES))
def test_a_typo_is_reported_once_without_follow_on_errors(make_mesh: Any, case: str) -> None:
    """The root cause, with a did-you-mean among what exists; no SQL error for a product whose input failed."""
    mutate, file, message, fix = ROOT_CAUSES[case]
    files = base_files()
    mutate(files)
    ws = make_mesh(files, grants=False)
    [problem] = ws.validate()
    assert (problem.file, problem.message, problem.fix) == (file, message, fix), problem
    assert problem.line is not None and "value:" in (ws.root / file).read_text().splitlines()[problem.line - 1]
    for command in (["validate"], ["build"], ["check"]):
        result = runner.invoke(app, [*command, "--mesh", str(ws.root)])
        text = " ".join(result.output.split())
        assert result.exit_code == 1, text
        assert text.count(message) == 1 and fix in text, text
        for follow_on in ("in__", "does not exist", "the query", "not an input port", "did you mean 'alpha.shop-dp.itemz'"):
            assert follow_on not in text, (follow_on, text)


@pytest.mark.parametrize("row, words", [
    ("4,,1.0,2024-01-04\n", "'name is required' failed: nullValues is 1, expected = 0"),
    ("1,apple-again,1.0,2024-01-04\n", "'primary key (item_id) is unique' failed: duplicateValues is 1, expected = 0"),
])
def test_data_violating_the_contract_is_not_published(make_mesh: Any, row: str, words: str) -> None:
    ws = make_mesh()
    ws.build()
    write_files(ws.root, {f"{SHOP}/data/items.csv": ITEMS_CSV + row})
    result = ws.build()
    assert result.products[0].status == "failed"
    assert any(words in p.message for p in result.products[0].problems), result.products[0].problems
    assert ws.catalog.read("alpha.shop-dp.items").num_rows == 3


def test_metastore_that_cannot_connect(make_mesh: Any) -> None:
    ws = make_mesh(metastore_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(MetastoreUnavailable, match=r"cannot connect to the metastore.*fix:"):
        ws.build()
    result = runner.invoke(app, ["catalog", "list", "--mesh", str(ws.root)],
                           env={"TRUSTMESH_METASTORE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    assert result.exit_code == 1


def test_not_a_mesh(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--mesh", str(tmp_path)])
    assert result.exit_code == 1
    assert "trustmesh init" in result.output


def test_contract_id_mismatch(make_mesh: Any) -> None:
    files = base_files()
    files[f"{SHOP}/contracts/items.odcs.yaml"] = contract_yaml("alpha", "other-dp", "items",
                                                               files[f"{SHOP}/contracts/items.odcs.yaml"]["schema"][0]["properties"])
    problems = make_mesh(files).validate()
    assert any("expected 'alpha.shop-dp.items'" in p.message for p in problems)


def test_workspace_reports_unknown_selector(make_mesh: Any) -> None:
    ws: Workspace = make_mesh()
    result = runner.invoke(app, ["build", "alpha.shop", "--mesh", str(ws.root)])
    assert result.exit_code == 2
    assert "did you mean" in result.output


def test_source_path_outside_the_mesh_is_refused(make_mesh: Any, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("item_id,name,price,sold_on\n1,x,1.0,2024-01-01\n")
    files = base_files()
    files[f"{SHOP}/product.yaml"]["inputPorts"][0]["customProperties"][0]["value"]["path"] = str(outside)
    problems = make_mesh(files).validate()
    assert any("is absolute" in p.message and "inside its own folder" in p.message for p in problems)


def test_engine_sessions_cannot_reach_outside_the_mesh(make_mesh: Any, tmp_path: Path) -> None:
    from trustmesh.engines import QueryFailed

    secret = tmp_path / "outside" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("a\n1\n")
    ws = make_mesh()
    session = ws.engine.session()
    try:
        for sql in (f"SELECT * FROM read_csv('{secret}')", "SELECT * FROM read_text('/etc/passwd')",
                    f"COPY (SELECT 1) TO '{tmp_path / 'outside' / 'x.csv'}'", "SET enable_external_access = true"):
            with pytest.raises(QueryFailed):
                session.query(sql)
        assert session.query(f"SELECT count(*) FROM read_csv('{ws.root / SHOP / 'data' / 'items.csv'}')") == [(3,)]
    finally:
        session.close()
