"""The demo mesh: standard-valid descriptors, consistent addresses, deterministic data, SQL that meets its contracts."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest
import sqlglot

from trustmesh.demo import write_demo
from trustmesh.privacy.identifiers import is_valid_nric, is_valid_postal_code, is_valid_sg_phone
from trustmesh.yamlfile import load_yaml

TEMPLATE = Path(__file__).parents[1] / "src/trustmesh/demo/mesh"
STANDARDS = Path(__file__).parents[2] / "shared/standards"
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
DATASET = re.compile(r"^[a-z][a-z0-9_]*$")
DOMAIN_ROLES = {"data-owner", "data-domain-steward", "data-product-owner", "developer"}
INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
TYPE_FAMILIES = {
    "integer": lambda t: t in INTEGER_TYPES,
    "number": lambda t: t in INTEGER_TYPES or t in {"FLOAT", "DOUBLE", "REAL"} or t.startswith("DECIMAL"),
    "string": lambda t: t == "VARCHAR",
    "boolean": lambda t: t == "BOOLEAN",
    "date": lambda t: t == "DATE",
    "timestamp": lambda t: t.startswith("TIMESTAMP"),
    "time": lambda t: t.startswith("TIME") and not t.startswith("TIMESTAMP"),
}


def load(path: Path) -> Any:
    """Parse YAML the way trustmesh does (plain Python values, dates kept as written)."""
    doc, problem = load_yaml(path)
    assert doc is not None, problem
    return doc.data


def custom(items: list[dict[str, Any]] | None, name: str) -> Any:
    """The value of one customProperties entry, or None."""
    return next((c["value"] for c in items or [] if c["property"] == name), None)


@dataclass
class Product:
    """One product folder of the template, with its descriptor and contracts parsed."""

    folder: Path
    domain: str
    descriptor: dict[str, Any]
    contracts: dict[str, dict[str, Any]]

    @property
    def address(self) -> str:
        return f"{self.domain}.{self.folder.name}"

    def ports(self, kind: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Input ports whose source is of kind, with their source."""
        for port in self.descriptor.get("inputPorts", []):
            source = custom(port.get("customProperties"), "source")
            if source["type"] == kind:
                yield port, source


def products() -> list[Product]:
    out = []
    for path in sorted(TEMPLATE.glob("domains/*/products/*/product.yaml")):
        contracts = {
            p.name.removesuffix(".odcs.yaml"): load(p) for p in sorted(path.parent.glob("contracts/*"))
        }
        out.append(Product(path.parent, path.parents[2].name, load(path), contracts))
    return out


PRODUCTS = products()
MESH = load(TEMPLATE / "mesh.yaml")
DOMAINS = {p.parent.name: load(p) for p in sorted(TEMPLATE.glob("domains/*/domain.yaml"))}
CONTRACTS = {f"{p.address}.{name}": (p, doc) for p in PRODUCTS for name, doc in p.contracts.items()}


def standard_validator(relative: str) -> jsonschema.protocols.Validator:
    path = STANDARDS / relative
    if not path.exists():
        pytest.skip(
            f"{path} is absent: the shared standards folder is needed to validate against the schemas"
        )
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_demo_has_the_promised_shape() -> None:
    assert MESH["name"] == "demo-mesh"
    assert set(DOMAINS) >= {"bts", "faa", "noaa", "carriers", "transport-tc", "health", "commuter"}
    assert len(PRODUCTS) >= 9
    assert DOMAINS["transport-tc"]["kind"] == "trusted-centre"


@pytest.mark.parametrize("product", PRODUCTS, ids=lambda p: p.address)
def test_product_validates_against_odps(product: Product) -> None:
    errors = [
        e.message
        for e in standard_validator("odps/odps-json-schema-v1.0.0.json").iter_errors(product.descriptor)
    ]
    assert errors == []


@pytest.mark.parametrize("address", sorted(CONTRACTS))
def test_contract_validates_against_odcs(address: str) -> None:
    contract = CONTRACTS[address][1]
    errors = [
        e.message for e in standard_validator("odcs/odcs-json-schema-v3.1.0.json").iter_errors(contract)
    ]
    assert errors == []


@pytest.mark.parametrize("product", PRODUCTS, ids=lambda p: p.address)
def test_ids_names_and_addresses_agree(product: Product) -> None:
    doc = product.descriptor
    assert NAME.match(product.domain) and NAME.match(product.folder.name)
    assert (doc["id"], doc["name"], doc["domain"]) == (product.address, product.folder.name, product.domain)
    assert DOMAINS[product.domain]["name"] == product.domain
    outputs = [port["name"] for port in doc["outputPorts"]]
    assert sorted(outputs) == sorted(product.contracts), "one contract per output port, named like it"
    for port in doc["outputPorts"]:
        address = f"{product.address}.{port['name']}"
        assert DATASET.match(port["name"])
        assert port["contractId"] == address
        assert (product.folder / "sql" / f"{port['name']}.sql").is_file()
        contract = product.contracts[port["name"]]
        assert (contract["id"], contract["name"]) == (address, port["name"])
        assert (contract["domain"], contract["dataProduct"]) == (product.domain, product.folder.name)
        assert [s["name"] for s in contract["schema"]] == [port["name"]]
    for port, source in product.ports("product"):
        assert source["address"] in CONTRACTS, f"{port['name']} reads an unknown address"
        assert port["contractId"] == source["address"]
    for port, _ in product.ports("file"):
        assert port["contractId"] == f"source.{product.address}.{port['name']}"


def people() -> dict[str, dict[str, Any]]:
    everyone = {p["id"]: p for p in MESH["people"]}
    for domain in DOMAINS.values():
        for person in domain["people"]:
            assert person["id"] not in everyone, f"person id {person['id']} is used twice"
            assert person["email"].endswith(".gov.sg")
            everyone[person["id"]] = person
    return everyone


def test_people_and_teams() -> None:
    everyone = people()
    assert {r for p in MESH["people"] for r in p["roles"]} == {"governance-admin", "auditor"}
    for name, domain in DOMAINS.items():
        assert {r for p in domain["people"] for r in p["roles"]} == DOMAIN_ROLES, name
    for product in PRODUCTS:
        teams = [product.descriptor["team"]] + [c["team"] for c in product.contracts.values()]
        for team in teams:
            for member in team["members"]:
                assert member["username"] in everyone, f"{product.address}: unknown {member['username']}"
                assert member["role"] in everyone[member["username"]]["roles"]


def visible_terms(domain: str) -> set[str]:
    """Glossary terms a domain's columns may link: global, its sector's Trusted Centre, its own."""
    terms = {t["term"] for t in MESH["governance"]["glossary"]}
    sector = DOMAINS[domain]["sector"]
    for other in DOMAINS.values():
        if other["name"] == domain or (other["kind"] == "trusted-centre" and other["sector"] == sector):
            terms |= {t["term"] for t in other.get("glossary", [])}
    return terms


@pytest.mark.parametrize("address", sorted(CONTRACTS))
def test_columns_are_fully_described(address: str) -> None:
    product, contract = CONTRACTS[address]
    scheme = MESH["governance"]["classification"]
    (schema,) = contract["schema"]
    assert any(col.get("primaryKey") for col in schema["properties"]), "mark the primary key"
    for col in schema["properties"]:
        where = f"{address}.{col['name']}"
        assert col["description"] and col["logicalType"] in TYPE_FAMILIES, where
        assert isinstance(col["required"], bool), where
        assert col["classification"] in scheme["levels"], where
        props = col.get("customProperties")
        pii = custom(props, "piiType")
        sensitivity = custom(props, "sensitivity")
        assert pii is None or (pii in scheme["piiTypes"] and sensitivity), f"{where}: PII needs a sensitivity"
        assert sensitivity is None or sensitivity in scheme["sensitivities"], where
        term = custom(props, "glossaryTerm")
        assert term is None or term in visible_terms(product.domain), f"{where}: {term} is not in reach"
    assert contract["slaProperties"]


# ---- the written demo: data files, determinism, and SQL run on DuckDB ------------------------------------


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("demo") / "mesh"
    write_demo(dest)
    return dest


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_write_demo_is_deterministic_and_complete(demo: Path, tmp_path: Path) -> None:
    write_demo(tmp_path)
    written = sorted(p.relative_to(demo) for p in demo.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for relative in written:
        assert (demo / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative
    template = sorted(p.relative_to(TEMPLATE) for p in TEMPLATE.rglob("*") if p.is_file())
    assert set(template) <= set(written)
    for product in PRODUCTS:
        for _, source in product.ports("file"):
            assert (demo / product.folder.relative_to(TEMPLATE) / source["path"]).is_file()


def test_write_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_synthetic_people_are_valid_and_linkable(demo: Path) -> None:
    health = read_csv(demo / "domains/health/products/activity-dp/data/participants.csv")
    commuters = read_csv(demo / "domains/commuter/products/trips-dp/data/commuters.csv")
    assert len(health) == 3000 and len(commuters) == 2500
    for person in health + commuters:
        assert is_valid_nric(person["nric"]), person
        assert is_valid_sg_phone(person["phone"]) and is_valid_postal_code(person["postal_code"]), person
    assert len({p["nric"] for p in health}) == len(health)
    assert {p["nric"][0] for p in health} == set("STFGM")
    by_nric = {p["nric"]: p for p in health}
    shared = [c for c in commuters if c["nric"] in by_nric]
    assert len(shared) == 1000
    assert all(
        (c["full_name"], c["date_of_birth"])
        == (by_nric[c["nric"]]["full_name"], by_nric[c["nric"]]["date_of_birth"])
        for c in shared
    )


def reader(source: dict[str, Any], folder: Path) -> str:
    """The DuckDB table function that reads an external file port, with its options."""
    path = folder / source["path"]
    fmt = source.get("format") or path.suffix.lstrip(".")
    function = {"csv": "read_csv", "parquet": "read_parquet", "json": "read_json"}[fmt]
    args = [f"'{path}'"]
    for key, value in (source.get("options") or {}).items():
        args.append(f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}")
    return f"{function}({', '.join(args)})"


def build_order() -> list[Product]:
    """Products with every upstream product before its consumers."""
    by_address = {p.address: p for p in PRODUCTS}
    done: list[Product] = []

    def visit(product: Product) -> None:
        if product in done:
            return
        for _, source in product.ports("product"):
            visit(by_address[source["address"].rsplit(".", 1)[0]])
        done.append(product)

    for product in PRODUCTS:
        visit(product)
    return done


def quoted(address: str) -> str:
    return ".".join(f'"{part}"' for part in address.split("."))


@pytest.fixture(scope="session")
def built(demo: Path) -> duckdb.DuckDBPyConnection:
    """Every dataset built from its SQL, as a table at its address, the way the product resolves inputs."""
    con = duckdb.connect()
    # The linkage token, as the build defines it, under a test key (the platform's own key never leaves its store).
    con.create_function("person_token", lambda _purpose, value: None if value is None else hmac.new(
        b"test-key", "".join(value.split()).upper().encode(), hashlib.sha256).hexdigest(),
        ["VARCHAR", "VARCHAR"], "VARCHAR", null_handling="special")
    for product in build_order():
        folder = demo / product.folder.relative_to(TEMPLATE)
        for port, source in product.ports("file"):
            con.execute(f'CREATE OR REPLACE VIEW "{port["name"]}" AS SELECT * FROM {reader(source, folder)}')
        if product.domain not in {
            row[0] for row in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
        }:
            con.execute(f"ATTACH ':memory:' AS \"{product.domain}\"")
        con.execute(f'CREATE SCHEMA "{product.domain}"."{product.folder.name}"')
        for dataset in product.contracts:
            sql = (folder / "sql" / f"{dataset}.sql").read_text(encoding="utf-8")
            con.execute(f"CREATE TABLE {quoted(f'{product.address}.{dataset}')} AS {sql}")
    return con


@pytest.mark.parametrize("address", sorted(CONTRACTS))
def test_sql_reads_only_its_ports(address: str) -> None:
    product, _ = CONTRACTS[address]
    sql = (product.folder / "sql" / f"{address.rsplit('.', 1)[1]}.sql").read_text(encoding="utf-8")
    statements = sqlglot.parse(sql, read="duckdb")
    assert len(statements) == 1 and not sql.rstrip().endswith(";")
    ctes = {cte.alias for cte in statements[0].find_all(sqlglot.exp.CTE)}
    allowed = {p["name"] for p, _ in product.ports("file")} | {
        s["address"] for _, s in product.ports("product")
    }
    for table in statements[0].find_all(sqlglot.exp.Table):
        name = ".".join(part for part in (table.catalog, table.db, table.name) if part)
        assert name in allowed | ctes, f"{address} reads {name}, which is not one of its input ports"


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """The one value a query returns, with its result fully consumed."""
    return con.execute(sql).fetchall()[0][0]


@pytest.mark.parametrize("address", sorted(CONTRACTS))
def test_sql_output_matches_contract(built: duckdb.DuckDBPyConnection, address: str) -> None:
    _, contract = CONTRACTS[address]
    (schema,) = contract["schema"]
    columns = {row[0]: row[1] for row in built.execute(f"DESCRIBE {quoted(address)}").fetchall()}
    assert set(columns) == {col["name"] for col in schema["properties"]}
    table = quoted(address)
    assert scalar(built, f"SELECT count(*) FROM {table}") > 0
    for col in schema["properties"]:
        actual = columns[col["name"]]
        assert TYPE_FAMILIES[col["logicalType"]](actual), f"{address}.{col['name']}: {actual}"
        if "physicalType" in col:
            assert actual.replace(" ", "") == col["physicalType"].replace(" ", ""), f"{address}.{col['name']}"
        if col["required"]:
            nulls = scalar(built, f'SELECT count(*) FROM {table} WHERE "{col["name"]}" IS NULL')
            assert nulls == 0, f"{address}.{col['name']} is required but has {nulls} nulls"
    key = [
        c["name"]
        for c in sorted(schema["properties"], key=lambda c: c.get("primaryKeyPosition", -1))
        if c.get("primaryKey")
    ]
    keys = ", ".join(f'"{k}"' for k in key)
    duplicates = scalar(
        built, f"SELECT count(*) FROM (SELECT {keys} FROM {table} GROUP BY ALL HAVING count(*) > 1)"
    )
    assert duplicates == 0, f"{address}: primary key {key} is not unique"
