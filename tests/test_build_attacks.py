"""A domain author attacks the platform at build time: every case is refused, and nothing secret comes back.

The author of `evil.grab-dp` may edit anything under `domains/evil/` and nothing else. The mesh holds
what they must never reach: another domain's raw file and published data (a marker row in alpha's
items), the platform's linkage key (`.trustmesh/keys.json`), its metastore (an API token's hash) and
an environment variable of the server. Each case rewrites evil's product (paths, SQL, quality rules),
runs `validate` and, when that passes, `build`, and asserts that the product was refused and that no
secret appears in what was published, in any problem or message. One control case proves the harness
would see a leak: the product's own marker does come back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from meshfactory import (
    METASTORE_TIER,
    base_files,
    column,
    contract_yaml,
    domain_yaml,
    file_input,
    product_input,
    product_yaml,
    spark_missing,
    write_files,
)

from trustmesh.engines import QueryFailed, Reach
from trustmesh.engines.duckdb import DuckDBEngine
from trustmesh.errors import TrustmeshError
from trustmesh.service import Workspace

pytestmark = pytest.mark.skipif(METASTORE_TIER == "postgresql", reason="what a build may reach does not depend on "
                                "the metastore; these run once, on SQLite")

EVIL = "domains/evil/products/grab-dp"
VICTIM_ROW = "VICTIM-SECRET-42"
OWN_MARKER = "OWN-MARKER-7"
ENV_NAME, ENV_SECRET = "TRUSTMESH_SECRET_PROBE", "env-secret-77"
LINK = "shared-link"


@dataclass
class Secrets:
    root: Path
    victim_csv: Path
    keys_file: Path
    metastore_file: Path
    warehouse_file: str
    values: dict[str, str] = field(default_factory=dict)


def _mesh_files() -> dict[str, Any]:
    files = base_files()
    shop = "domains/alpha/products/shop-dp"
    files[f"{shop}/data/items.csv"] += f"4,{VICTIM_ROW},9.5,2024-01-03\n"
    files["mesh.yaml"]["linkage"] = [{"name": LINK, "domains": ["alpha", "beta"]}]
    files["domains/evil/domain.yaml"] = domain_yaml("evil")
    files.update(_evil())
    return files


def _evil(sql: str = "SELECT v FROM own\n", inputs: list[dict[str, Any]] | None = None,
          quality: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    contract = contract_yaml("evil", "grab-dp", "out", [column("v", "string")])
    if quality:
        contract["schema"][0]["quality"] = quality
    return {
        f"{EVIL}/product.yaml": product_yaml("evil", "grab-dp", ["out"], [file_input("own", "data/own.csv"),
                                                                          *(inputs or [])]),
        f"{EVIL}/data/own.csv": f"v\n{OWN_MARKER}\n",
        f"{EVIL}/sql/out.sql": sql,
        f"{EVIL}/contracts/out.odcs.yaml": contract,
    }


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secrets]:
    """The mesh, built once per worker: alpha published, a linkage key and an API token issued."""
    root = tmp_path_factory.mktemp("attacks") / "mesh"
    write_files(root, _mesh_files())
    os.environ[ENV_NAME] = ENV_SECRET
    ws = Workspace.open(root)
    try:
        result = ws.build("alpha.shop-dp")
        assert result.ok, result.to_dict()
        key = ws.keys.key(f"linkage:{LINK}").hex()
        token, _ = ws.tokens.issue("gdo", "alpha-owner", name="probe")
        _, files = ws.catalog.version_files("alpha.shop-dp.items")
        from trustmesh.access.tokens import token_hash

        secrets = Secrets(root, root / "domains/alpha/products/shop-dp/data/items.csv",
                          root / ".trustmesh" / "keys.json", next((root / ".trustmesh").glob("*.db")), files[0],
                          {"victim row": VICTIM_ROW, "linkage key": key, "token": token,
                           "token hash": token_hash(token), "environment": ENV_SECRET})
    finally:
        ws.close()
    yield secrets
    os.environ.pop(ENV_NAME, None)


@dataclass
class Outcome:
    refused: bool
    text: str  # every problem, message and fix the author was shown
    published: str  # what evil.grab-dp published, as text


def attempt(mesh: Secrets, files: dict[str, Any], links: dict[str, Path] | None = None) -> Outcome:
    """Write evil's product as the case says, then validate and (if valid) build it."""
    folder = mesh.root / EVIL
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_symlink() or path.is_file():
            path.unlink()
    write_files(mesh.root, files)
    for rel, target in (links or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).symlink_to(target)
    ws = Workspace.open(mesh.root)
    text: list[str] = []
    try:
        try:
            problems = [p for p in ws.validate() if p.severity == "error"]
        except TrustmeshError as exc:
            return Outcome(True, str(exc), "")
        text += [f"{p.message} {p.fix}" for p in problems]
        if problems:
            return Outcome(True, "\n".join(text), "")
        try:
            result = ws.build("evil.grab-dp")
        except TrustmeshError as exc:
            return Outcome(True, "\n".join([*text, str(exc)]), "")
        text += [f"{r.message} " + " ".join(f"{p.message} {p.fix}" for p in r.problems) for r in result.products]
        published = any(r.status == "published" for r in result.products)
        return Outcome(not result.ok, "\n".join(text), _published(ws) if published else "")
    finally:
        ws.close()


def _published(ws: Workspace) -> str:
    try:
        _, files = ws.catalog.version_files("evil.grab-dp.out")
    except TrustmeshError:
        return ""
    return str(duckdb.sql(f"SELECT * FROM read_parquet({files!r})").fetchall())


def assert_refused(mesh: Secrets, outcome: Outcome) -> None:
    assert outcome.refused, f"not refused; published: {outcome.published[:300]}"
    assert not outcome.published
    for what, value in mesh.values.items():
        assert value not in outcome.text, f"the {what} was echoed: {outcome.text[:500]}"


def leak_port(path: str, fmt: str = "csv") -> dict[str, Any]:
    return file_input("leak", path, fmt)


V = "concat_ws('|', *COLUMNS(*)) AS v"  # every column of what was read, as the contract's one column
LEAK_SQL = f"SELECT {V} FROM leak\n"


def test_control_the_harness_sees_what_a_product_publishes(mesh: Secrets) -> None:
    outcome = attempt(mesh, _evil())
    assert not outcome.refused, outcome.text
    assert OWN_MARKER in outcome.published


# --- paths: an input port naming a file that is not the product's own ---------------------------------------

def _path_cases() -> list[Any]:
    keys = "../../../../.trustmesh/keys.json"
    victim = "../../../alpha/products/shop-dp/data/items.csv"
    return [
        pytest.param(lambda m: (keys, "json"), id="relative-climb-to-keys"),
        pytest.param(lambda m: (victim, "csv"), id="relative-climb-to-other-domain"),
        pytest.param(lambda m: (str(m.keys_file), "json"), id="absolute-keys"),
        pytest.param(lambda m: (str(m.victim_csv), "csv"), id="absolute-other-domain"),
        pytest.param(lambda m: (str(m.metastore_file), "csv"), id="absolute-metastore"),
        pytest.param(lambda m: (m.warehouse_file, "parquet"), id="absolute-warehouse-file"),
        pytest.param(lambda m: ("~/.bashrc", "csv"), id="home-folder"),
        pytest.param(lambda m: (f"file://{m.keys_file}", "json"), id="file-url"),
        pytest.param(lambda m: ("s3://bucket/items.csv", "csv"), id="s3-url"),
        pytest.param(lambda m: ("http://127.0.0.1:9/items.csv", "csv"), id="http-url"),
        pytest.param(lambda m: ("../../../alpha/products/shop-dp/data/*.csv", "csv"), id="glob-climb"),
        pytest.param(lambda m: ("../**/items.csv", "csv"), id="glob-recursive-climb"),
        pytest.param(lambda m: ("data/../../../../.trustmesh/keys.json", "json"), id="climb-in-the-middle"),
        pytest.param(lambda m: ("./data/../../../alpha/products/shop-dp/data/items.csv", "csv"), id="dot-climb"),
        pytest.param(lambda m: ("..\\..\\..\\alpha\\products\\shop-dp\\data\\items.csv", "csv"), id="backslashes"),
        pytest.param(lambda m: ("data/own.csv\x00../../x", "csv"), id="nul-byte"),
    ]


@pytest.mark.parametrize("where", _path_cases())
def test_input_port_path_outside_the_product_is_refused(mesh: Secrets, where: Any) -> None:
    path, fmt = where(mesh)
    assert_refused(mesh, attempt(mesh, _evil(LEAK_SQL, [leak_port(path, fmt)])))


@pytest.mark.parametrize("target", ["victim_csv", "keys_file", "metastore_file"])
def test_symlinked_file_in_the_product_folder_is_refused(mesh: Secrets, target: str) -> None:
    fmt = "json" if target == "keys_file" else "csv"
    outcome = attempt(mesh, _evil(LEAK_SQL, [leak_port("data/link.csv", fmt)]),
                      links={"data/link.csv": getattr(mesh, target)})
    assert_refused(mesh, outcome)
    assert "outside the product folder" in outcome.text


def test_symlinked_folder_in_the_product_folder_is_refused(mesh: Secrets) -> None:
    outcome = attempt(mesh, _evil(LEAK_SQL, [leak_port("linked/items.csv")]),
                      links={"linked": mesh.victim_csv.parent})
    assert_refused(mesh, outcome)


def test_symlinked_glob_match_is_refused(mesh: Secrets) -> None:
    outcome = attempt(mesh, _evil(LEAK_SQL, [leak_port("data/*.csv")]), links={"data/zz.csv": mesh.victim_csv})
    assert_refused(mesh, outcome)


@pytest.mark.parametrize("env", ["ALPHA_DB_URL", "TRUSTMESH_METASTORE", "DATABASE_URL", "evil_db_url"])
def test_database_source_naming_someone_elses_variable_is_refused(mesh: Secrets, env: str) -> None:
    os.environ[env] = f"sqlite:///{mesh.metastore_file}"
    try:
        port = {"name": "leak", "version": "1.0.0", "contractId": "source.leak", "customProperties": [
            {"property": "source", "value": {"type": "database", "urlEnv": env, "table": "tm_api_tokens"}}]}
        outcome = attempt(mesh, _evil(LEAK_SQL, [port]))
    finally:
        os.environ.pop(env, None)
    assert_refused(mesh, outcome)
    assert "EVIL_" in outcome.text


# --- product SQL: reading what is not an input, by any spelling ---------------------------------------------

def _sql_cases() -> list[Any]:
    return [
        pytest.param("SELECT {V} FROM read_csv('{victim}')", id="read_csv"),
        pytest.param("SELECT {V} FROM READ_CSV_AUTO('{victim}')", id="read_csv_auto-upper"),
        pytest.param("SELECT content AS v FROM read_text('{keys}')", id="read_text"),
        pytest.param("SELECT CAST(content AS VARCHAR) AS v FROM read_blob('{keys}')", id="read_blob"),
        pytest.param("SELECT {V} FROM read_json('{keys}')", id="read_json"),
        pytest.param("SELECT {V} FROM read_parquet('{warehouse}')", id="read_parquet-other-domain"),
        pytest.param("SELECT {V} FROM parquet_metadata('{warehouse}')", id="parquet_metadata"),
        pytest.param("SELECT {V} FROM '{victim}'", id="replacement-scan-string"),
        pytest.param('SELECT {V} FROM "{keys}"', id="replacement-scan-identifier"),
        pytest.param('SELECT {V} FROM "{keys}" WHERE EXISTS (WITH "{keys}" AS (SELECT 1) SELECT 1)',
                     id="cte-shadow-in-exists"),
        pytest.param('SELECT {V} FROM "{victim}" WHERE EXISTS (SELECT 1 FROM (WITH "{victim}" AS (SELECT 1) '
                     'SELECT {V} FROM "{victim}"))', id="cte-shadow-two-levels-down"),
        pytest.param('WITH a AS (SELECT {V} FROM "{victim}"), "{victim}" AS (SELECT 1) SELECT * FROM a',
                     id="cte-used-before-defined"),
        pytest.param('SELECT v FROM own UNION ALL SELECT name FROM "{victim}" '
                     'WHERE EXISTS (WITH "{victim}" AS (SELECT 1) SELECT 1)', id="cte-shadow-in-union"),
        pytest.param('SELECT (WITH x AS (SELECT 1) SELECT max(name) FROM "{victim}") AS v FROM own',
                     id="scalar-subquery-file"),
        pytest.param("WITH RECURSIVE r AS (SELECT 'a' AS v UNION ALL SELECT name FROM '{victim}') SELECT * FROM r",
                     id="recursive-cte-file"),
        pytest.param("SELECT content AS v FROM own, LATERAL (SELECT content FROM read_text('{keys}'))", id="lateral-table-function"),
        pytest.param("SELECT v FROM own WHERE v IN (SELECT name FROM '{victim}')", id="in-subquery-file"),
        pytest.param("SELECT list_transform([1], x -> (SELECT content FROM read_text('{keys}')))[1] AS v FROM own",
                     id="lambda-subquery"),
        pytest.param("SELECT {V} FROM in__raw_items", id="other-products-view"),
        pytest.param("SELECT {V} FROM in__alpha_shop_dp_items", id="other-products-upstream-view"),
        pytest.param("SELECT {V} FROM in__raw_items WHERE EXISTS (WITH in__raw_items AS (SELECT 1) SELECT 1)",
                     id="cte-shadow-other-products-view"),
        pytest.param('SELECT name AS v FROM alpha."shop-dp".items', id="undeclared-dataset-address"),
        pytest.param('SELECT name AS v FROM alpha."shop-dp".items WHERE EXISTS (WITH items AS (SELECT 1) SELECT 1)',
                     id="undeclared-dataset-with-cte"),
        pytest.param("SELECT table_name AS v FROM information_schema.tables", id="information-schema"),
        pytest.param("SELECT definition AS v FROM pg_catalog.pg_views", id="pg-catalog"),
        pytest.param('SELECT {V} FROM "temp"."main"."in__raw_items"', id="qualified-temp-view"),
        pytest.param("SELECT getenv('" + ENV_NAME + "') AS v FROM own", id="getenv"),
        pytest.param("SELECT current_setting('allowed_paths')::VARCHAR AS v FROM own", id="current_setting"),
        pytest.param("SELECT CAST(value AS VARCHAR) AS v FROM duckdb_settings()", id="duckdb_settings"),
        pytest.param("SELECT sql AS v FROM duckdb_views()", id="duckdb_views"),
        pytest.param("SELECT content AS v FROM query('SELECT content FROM read_text(''{keys}'')')", id="query-function"),
        pytest.param("SELECT {V} FROM query_table('in__raw_items')", id="query_table"),
        pytest.param("SELECT file AS v FROM glob('{root}/*')", id="glob"),
        pytest.param("SELECT {V} FROM sniff_csv('{victim}')", id="sniff_csv"),
        pytest.param("SELECT {V} FROM sqlite_scan('{metastore}', 'tm_api_tokens')", id="sqlite_scan"),
        pytest.param("SELECT __tm_keyed('linkage:" + LINK + "', v) AS v FROM own", id="internal-keyed-function"),
        pytest.param("SELECT person_token('" + LINK + "', v) AS v FROM own", id="linkage-of-another-domain"),
        pytest.param("SELECT version() AS v FROM own", id="engine-version"),
        pytest.param("ATTACH '{metastore}' AS m; SELECT 1 AS v", id="attach"),
        pytest.param("SELECT v FROM own; COPY (SELECT 1) TO '{root}/x.csv'", id="second-statement-copy"),
        pytest.param("INSTALL httpfs", id="install-extension"),
        pytest.param("LOAD httpfs", id="load-extension"),
        pytest.param("SET enable_external_access = true", id="set-setting"),
        pytest.param("PRAGMA database_list", id="pragma"),
        pytest.param("SELECT load_extension('httpfs') AS v FROM own", id="load_extension-function"),
        pytest.param("COPY (SELECT v FROM own) TO '{root}/out.csv'", id="copy-out"),
        pytest.param("CREATE TABLE x AS SELECT v FROM own", id="create"),
    ]


@pytest.mark.parametrize("sql", _sql_cases())
def test_product_sql_reaching_outside_its_inputs_is_refused(mesh: Secrets, sql: str) -> None:
    text = sql.format(victim=mesh.victim_csv, keys=mesh.keys_file, warehouse=mesh.warehouse_file, root=mesh.root,
                      metastore=mesh.metastore_file, V=V)
    assert_refused(mesh, attempt(mesh, _evil(text + "\n")))


def test_a_view_of_a_product_built_before_in_the_same_build_is_out_of_reach(mesh: Secrets) -> None:
    """alpha.shop-dp is built first and binds `in__raw_items` (its own input, the victim row in it)."""
    sql = f"SELECT {V} FROM in__raw_items WHERE EXISTS (WITH in__raw_items AS (SELECT 1) SELECT 1)\n"
    write_files(mesh.root, _evil(sql))
    ws = Workspace.open(mesh.root)
    try:
        try:
            result = ws.build(full=True)
        except TrustmeshError as exc:
            text, published = str(exc), ""
        else:
            text = " ".join(f"{r.message} " + " ".join(p.message for p in r.problems) for r in result.products)
            published = _published(ws)
    finally:
        ws.close()
    assert_refused(mesh, Outcome(True, text, "" if VICTIM_ROW not in published else published))


def test_reading_another_domains_dataset_without_a_grant_is_refused(mesh: Secrets) -> None:
    outcome = attempt(mesh, _evil("SELECT name AS v FROM items\n", [product_input("alpha.shop-dp.items")]))
    assert_refused(mesh, outcome)
    assert "without an active grant" in outcome.text


# --- quality rules: a `type: sql` rule is one SELECT over its own dataset ---------------------------------------

def _rule_cases() -> list[Any]:
    return [
        pytest.param("SELECT count(*) FROM read_text('{keys}')", id="rule-read_text"),
        pytest.param('SELECT CAST("linkage:' + LINK + '" AS INTEGER) FROM "{keys}" WHERE EXISTS (WITH "{keys}" AS '
                     '(SELECT 1) SELECT 1)', id="rule-cte-shadow-echo"),
        pytest.param("SELECT count(*) FROM in__raw_items", id="rule-other-products-view"),
        pytest.param("SELECT count(*) FROM in__own", id="rule-own-input-view"),
        pytest.param("SELECT length(getenv('" + ENV_NAME + "'))", id="rule-getenv"),
        pytest.param('SELECT count(*) FROM alpha."shop-dp".items', id="rule-other-dataset"),
        pytest.param("SELECT count(*) FROM ${{table}} WHERE EXISTS (SELECT * FROM '{victim}')", id="rule-subquery-file"),
        pytest.param("SELECT count(*) FROM ${{table}}; ATTACH '{metastore}' AS m", id="rule-two-statements"),
        pytest.param("SELECT count(*) FROM duckdb_settings()", id="rule-duckdb_settings"),
        pytest.param("SELECT CAST(current_setting('temp_directory') AS INTEGER)", id="rule-current_setting"),
    ]


@pytest.mark.parametrize("query", _rule_cases())
def test_quality_rule_reaching_outside_its_dataset_is_refused(mesh: Secrets, query: str) -> None:
    text = query.format(victim=mesh.victim_csv, keys=mesh.keys_file, metastore=mesh.metastore_file)
    rule = {"type": "sql", "name": "probe", "query": text, "mustBe": 0, "severity": "error"}
    assert_refused(mesh, attempt(mesh, _evil(quality=[rule])))


# --- the session itself: even SQL no guard saw cannot open what is outside the product's reach ----------------

def test_a_products_session_opens_only_its_reach(mesh: Secrets, tmp_path: Path) -> None:
    own = tmp_path / "own.csv"
    own.write_text("v\nok\n")
    session = DuckDBEngine([str(mesh.root)]).session(Reach(str(tmp_path / "scratch"), (str(own),)))
    try:
        assert session.query(f"SELECT v FROM read_csv('{own}')") == [("ok",)]
        for sql in (f"SELECT * FROM read_text('{mesh.keys_file}')", f"SELECT * FROM '{mesh.victim_csv}'",
                    f"SELECT * FROM read_parquet('{mesh.warehouse_file}')", "SET enable_external_access = true",
                    f"ATTACH '{mesh.metastore_file}' AS m", "INSTALL httpfs",
                    f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'"):
            with pytest.raises(QueryFailed):
                session.query(sql)
    finally:
        session.close()


def test_a_products_session_holds_no_other_products_views(mesh: Secrets, tmp_path: Path) -> None:
    engine = DuckDBEngine([str(mesh.root)])
    first = engine.session(Reach(str(tmp_path / "a")))
    first.query("CREATE VIEW in__raw_items AS SELECT 42 AS secret")
    second = engine.session(Reach(str(tmp_path / "b")))
    try:
        with pytest.raises(QueryFailed):
            second.query("SELECT * FROM in__raw_items")
    finally:
        first.close()
        second.close()


def test_the_attack_files_never_changed_the_victim(mesh: Secrets) -> None:
    assert VICTIM_ROW in mesh.victim_csv.read_text()
    assert mesh.values["linkage key"] in mesh.keys_file.read_text()


# --- the same product on Spark: what its SQL may name is its reach ------------------------------------------

@pytest.mark.spark
@pytest.mark.parametrize("sql", [
    pytest.param("SELECT {V} FROM parquet.`{warehouse}`", id="spark-sql-on-files"),
    pytest.param("SELECT reflect('java.lang.System', 'getenv', '" + ENV_NAME + "') AS v FROM own", id="spark-reflect"),
    pytest.param("SELECT java_method('java.lang.System', 'getProperty', 'user.home') AS v FROM own",
                 id="spark-java_method"),
    pytest.param('SELECT {V} FROM "{victim}" WHERE EXISTS (WITH "{victim}" AS (SELECT 1) SELECT 1)',
                 id="spark-cte-shadow"),
    pytest.param("SELECT {V} FROM in__raw_items", id="spark-other-products-view"),
])
def test_on_spark_product_sql_reaching_outside_its_inputs_is_refused(mesh: Secrets, sql: str) -> None:
    if (reason := spark_missing()) is not None:
        pytest.skip(reason)
    files = _evil(sql.format(victim=mesh.victim_csv, warehouse=mesh.warehouse_file, V=V) + "\n")
    files[f"{EVIL}/product.yaml"].setdefault("customProperties", []).append({"property": "engine", "value": "spark"})
    assert_refused(mesh, attempt(mesh, files))


@pytest.mark.spark
def test_on_spark_the_control_still_publishes(mesh: Secrets) -> None:
    if (reason := spark_missing()) is not None:
        pytest.skip(reason)
    files = _evil()
    files[f"{EVIL}/product.yaml"].setdefault("customProperties", []).append({"property": "engine", "value": "spark"})
    outcome = attempt(mesh, files)
    assert not outcome.refused, outcome.text
    assert OWN_MARKER in outcome.published
