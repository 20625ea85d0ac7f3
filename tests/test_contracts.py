"""Contract lifecycle: what a change breaks, exporting a published version, importing an ODCS file, the CLI,
and the exported contract tested by datacontract-cli in a virtualenv of its own."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from meshfactory import governed_demo
from typer.testing import CliRunner

from trustmesh.cli.contract import contract_app
from trustmesh.contracts import diff_contracts, export_contract, import_contract
from trustmesh.contracts.diff import ContractDiff, is_major_bump, next_major
from trustmesh.errors import UsageError
from trustmesh.scaffold import init_mesh, new_domain, new_product
from trustmesh.service import Workspace
from trustmesh.standards import ODCS, schema_errors
from trustmesh.yamlfile import dump_yaml, load_yaml

STANDARDS = Path(__file__).resolve().parents[2] / "shared" / "standards" / "odcs"
BUNDLED_SCHEMA = Path(__file__).resolve().parents[1] / "src" / "trustmesh" / "standards" / "odcs-json-schema-v3.1.0.json"
# the official schema beside the repo; else the copy trustmesh ships (test_journey checks they are the same bytes)
ODCS_SCHEMA = STANDARDS / "odcs-json-schema-v3.1.0.json" if STANDARDS.is_dir() else BUNDLED_SCHEMA
FULL_EXAMPLE = STANDARDS / "full-example.odcs.yaml"
needs_full_example = pytest.mark.skipif(not FULL_EXAMPLE.exists(), reason=(
    f"{FULL_EXAMPLE} is absent: the shared standards folder beside the repo holds ODCS's full example"))
FLIGHTS = "bts.flights-dp.flights"
CONTRACT = "domains/bts/products/flights-dp/contracts/flights.odcs.yaml"
runner = CliRunner()

# --- building contracts ---------------------------------------------------------------------------------------------


def col(name: str, logical: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "logicalType": logical, "description": f"The {name}.", "classification": "official-open",
            **extra}


def valid_values(*values: Any) -> list[dict[str, Any]]:
    return [{"metric": "invalidValues", "mustBe": 0, "arguments": {"validValues": list(values)}}]


def contract(*objects: dict[str, Any], version: str = "1.0.0", **top: Any) -> dict[str, Any]:
    return {"apiVersion": "v3.1.0", "kind": "DataContract", "id": FLIGHTS, "name": "flights", "version": version,
            "status": "active", "domain": "bts", "dataProduct": "flights-dp",
            "description": {"purpose": "Departures."}, "tags": ["flights"], "schema": list(objects),
            "slaProperties": [{"property": "frequency", "value": 1, "unit": "d"}], **top}


def flights(*extra: dict[str, Any], name: str = "flights") -> dict[str, Any]:
    return {"name": name, "physicalType": "table", "description": "One row per departure.", "properties": [
        col("flight_id", "integer", physicalType="BIGINT", required=True, primaryKey=True, primaryKeyPosition=1),
        col("carrier", "string", primaryKey=True, primaryKeyPosition=2, quality=valid_values("AA", "UA", "DL")),
        col("dep_delay", "number", physicalType="DOUBLE"),
        col("fare", "number", physicalType="DECIMAL(18,2)"),
        col("seats", "integer", physicalType="INTEGER"),
        col("code", "string", physicalType="VARCHAR(3)"),
        col("origin", "string"),
        col("dep_time", "timestamp"),
        col("flown_on", "date"),
        col("nric", "string", classification="restricted",
            customProperties=[{"property": "sensitivity", "value": "sensitive-normal"},
                              {"property": "piiType", "value": "nric"}]),
        *extra,
    ]}


def base() -> dict[str, Any]:
    return contract(flights())


def prop(doc: dict[str, Any], name: str, obj: int = 0) -> dict[str, Any]:
    return next(p for p in doc["schema"][obj]["properties"] if p["name"] == name)


def setting(column: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: prop(d, column).update(values)


def dropping(column: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["schema"][0]["properties"].remove(prop(d, column))


def adding(column: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["schema"][0]["properties"].append(column)


def custom(column: str, name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        p = prop(d, column)
        p["customProperties"] = [cp for cp in p.get("customProperties", []) if cp["property"] != name]
        p["customProperties"].append({"property": name, "value": value})
    return change


def changed(mutate: Callable[[dict[str, Any]], Any], old: dict[str, Any] | None = None) -> ContractDiff:
    old = old or base()
    new = copy.deepcopy(old)
    mutate(new)
    return diff_contracts(old, new)


P = "schema[flights].properties"

def unclassified_origin() -> dict[str, Any]:
    doc = base()
    prop(doc, "origin").pop("classification")
    return doc


def with_route() -> dict[str, Any]:
    doc = base()
    doc["schema"][0]["properties"].append(col("route", "object", properties=[col("stops", "number")]))
    return doc


# name: (change to the new contract, path of the breaking change, old contract when not `base()`)
BREAKING: dict[str, tuple[Callable[[dict[str, Any]], Any], str, Callable[[], dict[str, Any]]]] = {
    "removed column": (dropping("origin"), f"{P}[origin]", base),
    "number → integer": (setting("dep_delay", logicalType="integer"), f"{P}[dep_delay].logicalType", base),
    "string → integer": (setting("origin", logicalType="integer"), f"{P}[origin].logicalType", base),
    "timestamp → date": (setting("dep_time", logicalType="date"), f"{P}[dep_time].logicalType", base),
    "BIGINT → INTEGER": (setting("flight_id", physicalType="INTEGER"), f"{P}[flight_id].physicalType", base),
    "DECIMAL(18,2) → DECIMAL(10,2)": (setting("fare", physicalType="DECIMAL(10,2)"), f"{P}[fare].physicalType", base),
    "DOUBLE → DECIMAL(38,2)": (setting("dep_delay", physicalType="DECIMAL(38,2)"), f"{P}[dep_delay].physicalType", base),
    "VARCHAR(3) → VARCHAR(2)": (setting("code", physicalType="VARCHAR(2)"), f"{P}[code].physicalType", base),
    "boolean ↔ date is a change": (setting("flown_on", logicalType="boolean"), f"{P}[flown_on].logicalType", base),
    "maxLength tightened": (setting("code", logicalTypeOptions={"maxLength": 2}), f"{P}[code].logicalTypeOptions.maxLength", base),
    "newly required": (setting("origin", required=True), f"{P}[origin].required", base),
    "required column added": (adding(col("gate", required=True)), f"{P}[gate]", base),
    "newly unique": (setting("origin", unique=True), f"{P}[origin].unique", base),
    "key column added": (setting("origin", primaryKey=True, primaryKeyPosition=3), "schema[flights].primaryKey", base),
    "key column removed": (setting("carrier", primaryKey=False), "schema[flights].primaryKey", base),
    "key reordered": (lambda d: (prop(d, "flight_id").update(primaryKeyPosition=2),
                                 prop(d, "carrier").update(primaryKeyPosition=1)), "schema[flights].primaryKey", base),
    "allowed value removed": (setting("carrier", quality=valid_values("AA", "UA")), f"{P}[carrier].quality.validValues", base),
    "classification raised": (setting("origin", classification="restricted"), f"{P}[origin].classification", base),
    "classification set on an unclassified column": (setting("origin", classification="restricted"),
                                                     f"{P}[origin].classification", unclassified_origin),
    "unknown classification": (setting("origin", classification="internal"), f"{P}[origin].classification", base),
    "sensitivity raised": (custom("nric", "sensitivity", "sensitive-high"), f"{P}[nric].customProperties[sensitivity]", base),
    "newly PII": (custom("origin", "piiType", "address"), f"{P}[origin].customProperties[piiType]", base),
    "dataset renamed": (lambda d: d["schema"][0].update(name="departures"), "schema[flights]", base),
    "nested field narrowed": (lambda d: prop(d, "route")["properties"][0].update(logicalType="integer"),
                              f"{P}[route].properties[stops].logicalType", with_route),
}


@pytest.mark.parametrize("case", list(BREAKING), ids=list(BREAKING))
def test_breaking_changes(case: str) -> None:
    mutate, path, old = BREAKING[case]
    result = changed(mutate, old())
    assert result.breaking, result.to_dict()
    assert any(c.path == path and c.kind == "breaking" for c in result.changes), result.to_dict()
    assert all(c.what and c.reason for c in result.changes)


def test_a_removed_dataset_is_breaking_and_an_added_one_is_not() -> None:
    old = contract(flights(), flights(name="delays"))
    gone = diff_contracts(old, contract(flights()))
    assert [(c.kind, c.path) for c in gone.changes] == [("breaking", "schema[delays]")]
    added = diff_contracts(contract(flights()), old)
    assert [(c.kind, c.path) for c in added.changes] == [("compatible", "schema[delays]")]


COMPATIBLE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "optional column added": (adding(col("gate")), f"{P}[gate]"),
    "integer → number": (setting("seats", logicalType="number"), f"{P}[seats].logicalType"),
    "date → timestamp": (setting("flown_on", logicalType="timestamp"), f"{P}[flown_on].logicalType"),
    "integer → string": (setting("seats", logicalType="string"), f"{P}[seats].logicalType"),
    "INTEGER → BIGINT": (setting("seats", physicalType="BIGINT"), f"{P}[seats].physicalType"),
    "INTEGER → DECIMAL(12,2)": (setting("seats", physicalType="DECIMAL(12,2)"), f"{P}[seats].physicalType"),
    "DECIMAL(18,2) → DECIMAL(20,4)": (setting("fare", physicalType="DECIMAL(20,4)"), f"{P}[fare].physicalType"),
    "VARCHAR(3) → VARCHAR": (setting("code", physicalType="VARCHAR"), f"{P}[code].physicalType"),
    "column description": (setting("origin", description="Airport of departure."), f"{P}[origin].description"),
    "column tags": (setting("origin", tags=["airport"]), f"{P}[origin].tags"),
    "column businessName": (setting("origin", businessName="Origin airport"), f"{P}[origin].businessName"),
    "dataset description": (lambda d: d["schema"][0].update(description="Departures."), "schema[flights].description"),
    "contract description": (lambda d: d["description"].update(usage="Join on origin."), "description"),
    "contract tags": (lambda d: d.update(tags=["flights", "delay"]), "tags"),
    "required relaxed": (setting("flight_id", required=False), f"{P}[flight_id].required"),
    "classification loosened": (setting("nric", classification="official-closed"), f"{P}[nric].classification"),
    "sensitivity lowered": (custom("nric", "sensitivity", "non-sensitive"), f"{P}[nric].customProperties[sensitivity]"),
    "PII mark removed": (lambda d: prop(d, "nric").update(customProperties=[{"property": "sensitivity",
                                                                             "value": "sensitive-normal"}]),
                         f"{P}[nric].customProperties[piiType]"),
    "allowed value added": (setting("carrier", quality=valid_values("AA", "UA", "DL", "B6")),
                            f"{P}[carrier].quality.validValues"),
    "new quality rule": (setting("origin", quality=[{"metric": "nullValues", "mustBe": 0}]), f"{P}[origin].quality[nullValues]"),
    "new dataset quality rule": (lambda d: d["schema"][0].update(quality=[{"metric": "rowCount", "mustBeGreaterThan": 0}]),
                                 "schema[flights].quality[rowCount]"),
    "SLA frequency changed": (lambda d: d["slaProperties"][0].update(value=2), "slaProperties[frequency]"),
    "SLA latency added": (lambda d: d["slaProperties"].append({"property": "latency", "value": 4, "unit": "h"}),
                          "slaProperties[latency]"),
    "SLA removed": (lambda d: d.update(slaProperties=[]), "slaProperties[frequency]"),
    "status": (lambda d: d.update(status="deprecated"), "status"),
    "team": (lambda d: d.update(team={"name": "BTS"}), "team"),
}


@pytest.mark.parametrize("case", list(COMPATIBLE), ids=list(COMPATIBLE))
def test_compatible_changes(case: str) -> None:
    mutate, path = COMPATIBLE[case]
    result = changed(mutate)
    assert not result.breaking, result.to_dict()
    assert [c.path for c in result.changes] == [path], result.to_dict()
    assert not result.requires_major_bump()


def test_sla_changes_say_which() -> None:
    result = changed(lambda d: d["slaProperties"][0].update(value=2))
    assert result.changes[0].what == "SLA frequency changed: 1 d → 2 d"
    latency = changed(lambda d: d["slaProperties"].append({"property": "latency", "value": 4, "unit": "h"}))
    assert latency.changes[0].what == "SLA latency added: 4 h"


def test_no_changes_and_type_spellings() -> None:
    assert diff_contracts(base(), base()).changes == []
    assert changed(setting("seats", physicalType="int")).changes == []  # INT is INTEGER
    assert changed(setting("fare", physicalType="decimal( 18 , 2 )")).changes == []
    unknown = changed(setting("code", physicalType="GEOGRAPHY"))
    assert unknown.breaking and "changed" in unknown.changes[0].what
    to_list = changed(setting("seats", physicalType="INTEGER[]"))
    assert to_list.breaking and to_list.changes[0].what == "physicalType changed INTEGER → INTEGER[]"
    to_text = changed(setting("seats", physicalType="VARCHAR"))
    assert not to_text.breaking and to_text.changes[0].what == "physicalType widened INTEGER → VARCHAR"


def test_several_changes_are_all_reported() -> None:
    def edit(d: dict[str, Any]) -> None:
        dropping("origin")(d)
        adding(col("gate"))(d)
        setting("code", description="IATA code.")(d)

    result = changed(edit)
    assert sorted((c.kind, c.path) for c in result.changes) == [
        ("breaking", f"{P}[origin]"), ("compatible", f"{P}[code].description"), ("compatible", f"{P}[gate]")]
    as_dict = result.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["breaking"] is True and as_dict["requires_major_bump"] is True
    assert set(as_dict["changes"][0]) == {"kind", "path", "what", "reason"}


@pytest.mark.parametrize(("old", "new", "breaking", "bump_needed"), [
    ("1.4.0", "2.0.0", True, False),
    ("1.4.0", "1.5.0", True, True),
    ("1.4.0", "1.4.0", True, True),
    ("1.4.0", "1.5.0", False, False),
    ("0.3.1", "0.4.0", True, False),   # on 0.x a minor bump is a major one
    ("0.3.1", "0.3.2", True, True),
    ("0.3.1", "1.0.0", True, False),
    ("v1.0.0", "v2.0.0", True, False),
    ("2.0.0-rc.1", "3.0.0", True, False),
    ("draft", "2.0.0", True, True),   # cannot tell: ask for a bump
])
def test_requires_major_bump(old: str, new: str, breaking: bool, bump_needed: bool) -> None:
    mutate = dropping("origin") if breaking else adding(col("gate"))
    result = changed(lambda d: (mutate(d), d.update(version=new)), base() | {"version": old})
    assert (result.old_version, result.new_version, result.breaking) == (old, new, breaking)
    assert result.requires_major_bump() is bump_needed


def test_major_bump_helpers() -> None:
    assert is_major_bump("1.9.9", "2.0.0") and not is_major_bump("2.0.0", "1.0.0")
    assert next_major("1.4.2") == "2.0.0" and next_major("0.3.1") == "0.4.0" and next_major("x") is None


# --- export ---------------------------------------------------------------------------------------------------------


def _official_schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(ODCS_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [e.message for e in validator.iter_errors(doc)]


def test_export_is_valid_odcs_with_a_local_parquet_server(tmp_path: Path) -> None:
    original = base() | {"servers": [{"server": "old", "type": "postgres", "host": "db", "port": 5432,
                                      "database": "x", "schema": "y"}]}
    before = copy.deepcopy(original)
    doc = export_contract(original, address=FLIGHTS, data_files=["/w/data/1.parquet"], version=7)
    assert original == before
    assert doc["servers"] == [{"server": "trustmesh", "type": "local", "format": "parquet", "path": "/w/data/1.parquet",
                               "description": f"The Parquet data of {FLIGHTS} version 7, as published by trustmesh."}]
    notes = {cp["property"]: cp["value"] for cp in doc["customProperties"]}
    assert notes == {"trustmeshAddress": FLIGHTS, "trustmeshVersion": 7}
    assert schema_errors(ODCS, doc) == []
    assert _official_schema_errors(doc) == []
    again = export_contract(doc, address=FLIGHTS, data_files=["/w/data/2.parquet"], version=8)
    assert [cp["value"] for cp in again["customProperties"]] == [FLIGHTS, 8]


# (physicalType in the contract, logicalType) → the physicalType datacontract-cli turns into the published type
SERVER_SPELLINGS: dict[str, tuple[str | None, str, str]] = {
    "zoned timestamp": ("TIMESTAMP WITH TIME ZONE", "timestamp", "TIMESTAMP_TZ"),
    "zoned timestamp, short name": ("TIMESTAMPTZ", "timestamp", "TIMESTAMP_TZ"),
    "naive timestamp": ("TIMESTAMP", "timestamp", "TIMESTAMP_NTZ"),  # its bare `timestamp` is zoned
    "timestamp by logical type": (None, "timestamp", "TIMESTAMP_NTZ"),
    "nanosecond timestamp": ("TIMESTAMP_NS", "timestamp", "TIMESTAMP_NTZ"),
    "integer alias": ("INT4", "integer", "INTEGER"),
    "integer by logical type": (None, "integer", "BIGINT"),  # not its INTEGER, which a BIGINT would overflow
    "tinyint is published as INTEGER": ("TINYINT", "integer", "INTEGER"),
    "hugeint": ("HUGEINT", "integer", "DECIMAL(38,0)"),
    "numeric": ("NUMERIC(10,2)", "number", "DECIMAL(10,2)"),
    "bare decimal": ("DECIMAL", "number", "DECIMAL(18,3)"),
    "number by logical type": (None, "number", "DOUBLE"),  # not its DECIMAL(18,3)
    "real": ("REAL", "number", "FLOAT"),
    "varchar with a length": ("VARCHAR(3)", "string", "VARCHAR"),
    "string alias": ("STRING", "string", "VARCHAR"),
    "uuid is published as text": ("UUID", "string", "VARCHAR"),
    "blob": ("BLOB", "string", "BLOB"),
    "time is published as text": ("TIME", "time", "VARCHAR"),
    "date": (None, "date", "DATE"),
    "boolean": ("BOOL", "boolean", "BOOLEAN"),
    "map": ("MAP(VARCHAR, INTEGER)", "object", "MAP(TEXT, INT)"),  # passed through to DuckDB as it is
    # datacontract-cli writes a struct's field names unquoted: a keyword there is a syntax error
    "a struct with a reserved name reads as text": ("STRUCT(\"order\" INTEGER)", "object", "VARCHAR"),
    "a struct with a type function's name reads as text": ("STRUCT(at INTEGER)", "object", "VARCHAR"),
    "a struct with a name to quote reads as text": ("STRUCT(\"a b\" INTEGER)", "object", "VARCHAR"),
    "a type sqlglot does not know reads as text": ("GEOMETRY", "string", "VARCHAR"),
}


@pytest.mark.parametrize("case", list(SERVER_SPELLINGS), ids=list(SERVER_SPELLINGS))
def test_export_spells_types_for_datacontract_cli(case: str) -> None:
    physical, logical, expected = SERVER_SPELLINGS[case]
    column = col("c", logical, **({"physicalType": physical} if physical else {}))
    doc = export_contract(contract({"name": "t", "properties": [column]}), address=FLIGHTS,
                          data_files=["/nowhere/1.parquet"], version=1)  # not on disk: typed by the contract
    assert prop(doc, "c")["physicalType"] == expected


def test_export_describes_lists_and_structs_for_datacontract_cli() -> None:
    doc = export_contract(contract({"name": "t", "properties": [
        col("ids", "array", physicalType="BIGINT[]"),
        col("legs", "object", physicalType="STRUCT(departs TIMESTAMP, stops INTEGER[])",
            properties=[col("stops", "array", description="Stops of the leg.")]),
    ]}), address=FLIGHTS, data_files=["/nowhere/1.parquet"], version=1)
    assert prop(doc, "ids")["physicalType"] == "array"
    assert prop(doc, "ids")["items"] == {"physicalType": "BIGINT", "logicalType": "integer"}
    legs = prop(doc, "legs")
    assert legs["physicalType"] == "object"
    assert [(p["name"], p["physicalType"]) for p in legs["properties"]] == [("departs", "TIMESTAMP_NTZ"),
                                                                                   ("stops", "array")]
    assert legs["properties"][1]["description"] == "Stops of the leg."  # the contract's own nested field, kept
    assert legs["properties"][1]["items"] == {"physicalType": "INTEGER", "logicalType": "integer"}
    assert _official_schema_errors(doc) == []


def test_export_names_exactly_the_versions_files(tmp_path: Path) -> None:
    own = tmp_path / "v3"
    (own / "a").mkdir(parents=True)
    files = [str(own / "a" / "1.parquet"), str(own / "2.parquet")]
    for f in files:
        Path(f).write_bytes(b"")
    doc = export_contract(base(), address=FLIGHTS, data_files=files, version=3)
    assert doc["servers"][0]["path"] == f"{own}/**/*.parquet"
    (own / "other-version.parquet").write_bytes(b"")
    with pytest.raises(UsageError, match="share"):
        export_contract(base(), address=FLIGHTS, data_files=files, version=3)
    with pytest.raises(UsageError, match="no data files"):
        export_contract(base(), address=FLIGHTS, data_files=[], version=3)


# --- import ---------------------------------------------------------------------------------------------------------


def _mesh(root: Path, *domains: str) -> Path:
    init_mesh(root)
    for d in domains:
        new_domain(root, d)
    return root


@needs_full_example
def test_import_full_example_validates(tmp_path: Path) -> None:
    root = _mesh(tmp_path / "mesh", "seller")
    path = import_contract(root, FULL_EXAMPLE, domain=None, product=None)
    folder = root / "domains/seller/products/my-quantum"
    assert path == folder / "product.yaml"
    ws = Workspace.open(root)
    problems = ws.validate()
    assert [str(p) for p in problems if p.severity == "error"] == []
    # ODCS approvers may be job titles; those cannot route requests, and validate says so
    assert {p.path.split(".")[-1] for p in problems} == {"firstLevelApprovers", "secondLevelApprovers"}
    assert all("ignored when routing requests" in p.message for p in problems)
    mesh = ws.mesh
    assert sorted(mesh.datasets) == ["seller.my-quantum.receivers", "seller.my-quantum.tbl"]
    assert (folder / "data/tbl.csv").read_text() == "transaction_reference_date,rcvr_id,rcvr_cntry_code\n"
    assert "FROM raw_tbl" in (folder / "sql/tbl.sql").read_text()
    text = (folder / "contracts/tbl.odcs.yaml").read_text()
    assert "# Imported by `trustmesh contract import` from full-example.odcs.yaml" in text
    assert "classification public → official-open" in text
    doc, _ = load_yaml(folder / "contracts/tbl.odcs.yaml")
    assert doc is not None
    assert (doc.data["id"], doc.data["domain"], doc.data["dataProduct"]) == ("seller.my-quantum.tbl", "seller", "my-quantum")
    assert "servers" not in doc.data and len(doc.data["schema"]) == 1
    date_col = doc.data["schema"][0]["properties"][0]
    assert date_col["classification"] == "official-open"
    assert {"property": "sourceClassification", "value": "public"} in date_col["customProperties"]
    receivers = mesh.datasets["seller.my-quantum.receivers"].contract
    assert receivers is not None
    assert receivers.primary_key == ["id", "country_code"]
    assert {c.name: c.classification for c in receivers.columns} == {
        "id": "restricted", "country_code": "official-open", "receiver_name": "restricted", "receiver_type": "official-open"}
    imported = {cp["property"]: cp["value"] for cp in doc.data["customProperties"]}["importedFrom"]
    assert imported["id"] == "53581432-6c55-4ba2-a65f-72344a91553a" and imported["dataProduct"] == "my quantum"


def test_import_fits_types_and_names_to_the_mesh(tmp_path: Path) -> None:
    root = _mesh(tmp_path / "mesh", "sales")
    source = contract({"name": "Order Lines", "properties": [
        {"name": "line_id", "physicalType": "NUMBER(10)", "primaryKey": True, "classification": "secret-ish"},
        col("amount", "number", physicalType="VARCHAR2(20)"),
        col("placed", "timestamp", physicalType="TIMESTAMP(3)"),
        col("is_gift", "boolean", customProperties=[{"property": "sensitivity", "value": "very"}]),
    ]}, domain="Sales Dept", dataProduct="Orders")
    file = tmp_path / "orders.odcs.yaml"
    file.write_text(dump_yaml(source))
    import_contract(root, file, domain="sales", product="orders-dp")
    assert [str(p) for p in Workspace.open(root).validate()] == []
    doc, _ = load_yaml(root / "domains/sales/products/orders-dp/contracts/order_lines.odcs.yaml")
    assert doc is not None
    props = {p["name"]: p for p in doc.data["schema"][0]["properties"]}
    assert props["line_id"]["logicalType"] == "integer"
    assert props["line_id"]["classification"] == "official-closed"
    assert "physicalType" not in props["amount"]
    assert {"property": "sourcePhysicalType", "value": "VARCHAR2(20)"} in props["amount"]["customProperties"]
    assert {"property": "sourceSensitivity", "value": "very"} in props["is_gift"]["customProperties"]
    sql = (root / "domains/sales/products/orders-dp/sql/order_lines.sql").read_text()
    assert 'CAST("amount" AS DOUBLE)' in sql


@needs_full_example
def test_import_refuses_with_a_fix(tmp_path: Path) -> None:
    root = _mesh(tmp_path / "mesh", "seller")
    with pytest.raises(UsageError, match="trustmesh new domain sales"):
        import_contract(root, FULL_EXAMPLE, domain="sales", product=None)
    import_contract(root, FULL_EXAMPLE, domain=None, product=None)
    with pytest.raises(UsageError, match=r"already exists.*--product"):
        import_contract(root, FULL_EXAMPLE, domain=None, product=None)
    broken = base()
    broken.pop("status")
    prop(broken, "origin")["logicalType"] = "int"
    file = tmp_path / "broken.odcs.yaml"
    file.write_text(dump_yaml(broken))
    with pytest.raises(UsageError) as raised:
        import_contract(root, file, domain="seller", product="other-dp")
    message = str(raised.value)
    assert "not a valid ODCS v3.1.0 contract (2 problems)" in message
    assert "'status' is a required property" in message and "'int' is not one of" in message
    with pytest.raises(UsageError, match="not valid"):
        import_contract(root, FULL_EXAMPLE, domain="Bad Name", product=None)
    assert not (root / "domains/seller/products/other-dp").exists()


# --- CLI --------------------------------------------------------------------------------------------------------------


def cli(*args: str) -> Any:
    return runner.invoke(contract_app, list(args))


def _edit_yaml(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    doc, problem = load_yaml(path)
    assert doc is not None, problem
    change(doc.data)
    path.write_text(dump_yaml(doc.data), encoding="utf-8")


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Workspace]:
    root = _mesh(tmp_path / "mesh", "bts")
    new_product(root, "bts", "flights-dp")
    ws = Workspace.open(root)
    assert ws.build().ok
    yield ws
    ws.close()


def test_cli_diff_against_catalog_file_and_versions(built: Workspace, tmp_path: Path) -> None:
    mesh = str(built.root)
    same = cli("diff", FLIGHTS, "--mesh", mesh)
    assert same.exit_code == 0 and "no changes" in same.output, same.output
    old_file = tmp_path / "old.odcs.yaml"
    shutil.copy(built.root / CONTRACT, old_file)

    def drop_category(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"] = [p for p in d["schema"][0]["properties"] if p["name"] != "category"]

    _edit_yaml(built.root / CONTRACT, drop_category)
    breaking = cli("diff", FLIGHTS, "--mesh", mesh)
    assert breaking.exit_code == 1, breaking.output
    text = " ".join(breaking.output.split())
    assert f"{P}[category]" in text and "needs a major version bump" in text and "version: 0.2.0" in text
    as_json = json.loads(cli("diff", FLIGHTS, "--json", "--mesh", mesh).stdout)
    assert as_json["breaking"] and as_json["requires_major_bump"]
    assert as_json["old"] == {"source": "catalog", "version": 1, "contract_version": "0.1.0"}
    assert [(c["path"], c["what"]) for c in as_json["changes"]] == [(f"{P}[category]", "column category removed")]
    against_file = json.loads(cli("diff", FLIGHTS, "--against", str(old_file), "--json", "--mesh", mesh).stdout)
    assert against_file["changes"] == as_json["changes"] and against_file["old"]["source"] == "file"
    assert cli("diff", FLIGHTS, "--against", "1", "--mesh", mesh).exit_code == 1

    # publish version 2 under contract 0.2.0: version 1's contract is no longer kept
    _edit_yaml(built.root / CONTRACT, lambda d: d.update(version="0.2.0"))
    sql = built.root / "domains/bts/products/flights-dp/sql/flights.sql"
    sql.write_text(sql.read_text().replace("    category,\n", ""))
    assert built.build().ok
    assert cli("diff", FLIGHTS, "--against", "2", "--mesh", mesh).exit_code == 0
    gone = cli("diff", FLIGHTS, "--against", "1", "--mesh", mesh)
    assert gone.exit_code == 1 and "is not available" in gone.output and "--against old.odcs.yaml" in gone.output
    assert cli("diff", FLIGHTS, "--against", "9", "--mesh", mesh).exit_code == 1
    bad = cli("diff", FLIGHTS, "--against", "nope.yaml", "--mesh", mesh)
    assert bad.exit_code == 2 and "neither a version number nor a file" in bad.output
    assert cli("diff", "not-an-address", "--mesh", mesh).exit_code == 2


def test_cli_export(built: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "out" / "flights.odcs.yaml"
    result = cli("export", FLIGHTS, "--output", str(out), "--json", "--mesh", str(built.root))
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["version"] == 1 and len(info["data_files"]) == 1
    doc, _ = load_yaml(out)
    assert doc is not None
    assert _official_schema_errors(doc.data) == []
    assert Path(doc.data["servers"][0]["path"]).is_file()
    stdout = cli("export", FLIGHTS, "--mesh", str(built.root))
    assert stdout.exit_code == 0 and stdout.stdout.startswith("apiVersion: v3.1.0\n")
    assert cli("export", FLIGHTS, "--version", "5", "--mesh", str(built.root)).exit_code == 1
    assert cli("export", FLIGHTS, "--version", "0", "--mesh", str(built.root)).exit_code == 2
    assert cli("export", "bts.flights-dp.nope", "--mesh", str(built.root)).exit_code == 1


@needs_full_example
def test_cli_import(tmp_path: Path) -> None:
    root = _mesh(tmp_path / "mesh", "seller")
    result = cli("import", str(FULL_EXAMPLE), "--json", "--mesh", str(root))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["datasets"] == ["seller.my-quantum.receivers", "seller.my-quantum.tbl"]
    again = cli("import", str(FULL_EXAMPLE), "--mesh", str(root))
    assert again.exit_code == 2 and "already exists" in again.output
    nodomain = cli("import", str(FULL_EXAMPLE), "--domain", "sales", "--mesh", str(root))
    assert nodomain.exit_code == 2 and "trustmesh new domain sales" in nodomain.output
    missing = cli("import", str(tmp_path / "nope.yaml"), "--mesh", str(root))
    assert missing.exit_code == 2 and "file not found" in missing.output
    shown = cli("import", str(FULL_EXAMPLE), "--product", "quantum-two", "--mesh", str(root))
    assert shown.exit_code == 0 and "seller.quantum-two.tbl" in shown.output


def test_cli_help_has_examples() -> None:
    assert cli("--help").exit_code == 0
    for command in ("diff", "export", "import"):
        result = cli(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output and "--mesh" in result.output, command


# --- datacontract-cli -----------------------------------------------------------------------------------------------

DATACONTRACT = "1.2.*"
CACHE = Path(os.environ.get("TRUSTMESH_TEST_CACHE", Path.home() / ".cache" / "trustmesh-test"))
# datacontract-cli cannot run type checks on Parquet files (it casts the file into the contract's types);
# it reports each as this warning. Every other check must pass.
UNSUPPORTED_TYPE_CHECK = "Checking types in parquet files is not supported yet."


@pytest.fixture(scope="session")
def datacontract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `datacontract` script of datacontract-cli, in a virtualenv of its own (it pins duckdb<1.6, so it must
    never enter the project's environment). Built once and cached per version and Python; skipped offline."""
    key = f"{DATACONTRACT.rstrip('.*')}-py{sys.version_info.major}.{sys.version_info.minor}"
    try:
        (CACHE / "datacontract-venv").mkdir(parents=True, exist_ok=True)
        venv = CACHE / "datacontract-venv" / key
    except OSError:
        venv = tmp_path_factory.mktemp("datacontract-venv") / key
    script = venv / "bin" / "datacontract"
    with open(venv.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
        if (venv / ".ready").exists() and script.exists():
            return script
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        install = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
             f"datacontract-cli[duckdb]=={DATACONTRACT}"], capture_output=True, text=True, timeout=1800)
        if install.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            lines = (install.stderr or install.stdout).strip().splitlines()
            tail = " ".join([line for line in lines if line.startswith("ERROR")] or lines[-3:])
            pytest.skip(f"pip cannot install datacontract-cli[duckdb]=={DATACONTRACT} (offline, or no such "
                        f"package on the index): {tail}")
        (venv / ".ready").write_text(f"datacontract-cli[duckdb]=={DATACONTRACT}\n")
    return script


def _richer_flights(root: Path) -> None:
    """The scaffolded flights product with more types, allowed values and a decimal to check against."""
    folder = root / "domains/bts/products/flights-dp"
    (folder / "sql/flights.sql").write_text(
        "SELECT record_id, recorded_on, CAST(recorded_on AS TIMESTAMP) AS recorded_at, category,\n"
        "       amount, amount > 5 AS is_large\nFROM raw_records\n", encoding="utf-8")

    def richer(d: dict[str, Any]) -> None:
        props = {p["name"]: p for p in d["schema"][0]["properties"]}
        props["category"].update(required=True, quality=[
            {"metric": "invalidValues", "mustBe": 0, "arguments": {"validValues": ["alpha", "beta"]},
             "dimension": "conformity"}])
        props["amount"].update(physicalType="DECIMAL(10,2)")
        d["schema"][0]["properties"] += [
            {"name": "recorded_at", "logicalType": "timestamp", "description": "When.", "classification": "official-open"},
            {"name": "is_large", "logicalType": "boolean", "description": "Over 5.", "required": True,
             "classification": "official-open"}]
        d["schema"][0]["quality"] = [{"metric": "rowCount", "mustBeGreaterThan": 0}]

    _edit_yaml(folder / "contracts/flights.odcs.yaml", richer)


def _datacontract_run(script: Path, contract_file: Path) -> tuple[int, dict[str, Any] | None, str]:
    """`datacontract test` on a contract: its exit code, its JSON report (None when it wrote none), its output."""
    report = contract_file.with_suffix(".result.json")
    run = subprocess.run([str(script), "test", str(contract_file), "--output-format", "json", "--output", str(report)],
                         capture_output=True, text=True, timeout=600)
    return run.returncode, json.loads(report.read_text()) if report.exists() else None, run.stdout + run.stderr


def _datacontract_test(script: Path, contract_file: Path) -> tuple[int, dict[str, Any]]:
    code, report, output = _datacontract_run(script, contract_file)
    assert report is not None, output
    return code, report


def _unexpected_checks(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The checks that did not pass, less the type checks datacontract-cli cannot run on Parquet."""
    return [(c["name"], c["result"], c["reason"]) for c in report["checks"]
            if c["result"] != "passed" and not (c["result"] == "warning" and c["reason"] == UNSUPPORTED_TYPE_CHECK)]


@pytest.mark.slow
def test_datacontract_cli_lints_and_tests_the_export(datacontract: Path, tmp_path: Path) -> None:
    root = _mesh(tmp_path / "mesh", "bts")
    new_product(root, "bts", "flights-dp")
    _richer_flights(root)
    ws = Workspace.open(root)
    try:
        result = ws.build()
        assert result.ok, result.to_dict()
    finally:
        ws.close()
    exported = tmp_path / "flights.odcs.yaml"
    assert cli("export", FLIGHTS, "--output", str(exported), "--mesh", str(root)).exit_code == 0

    lint = subprocess.run([str(datacontract), "lint", str(exported)], capture_output=True, text=True, timeout=600)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    code, report = _datacontract_test(datacontract, exported)
    assert code == 0, json.dumps(report, indent=1)
    assert report["result"] in ("passed", "warning") and report["server"] == "trustmesh"
    checks = report["checks"]
    assert _unexpected_checks(report) == []
    ran = {(c["type"], c["field"]) for c in checks if c["result"] == "passed"}
    for expected in [("field_required", "category"), ("field_primary_key_unique", "record_id"),
                     ("field_is_present", "is_large")]:
        assert expected in ran, sorted(ran)
    assert any(c["field"] == "category" and c["category"] == "quality" and c["result"] == "passed" for c in checks)

    # The same data against a stricter promise, or a wrong type, fails: the test reads the published file.
    # (It reads each column as its physicalType, which the export sets to the file's type: a wrong type is one.)
    changes: dict[str, Callable[[dict[str, Any]], Any]] = {
        "allowed values": lambda p: p["quality"][0]["arguments"].update(validValues=["alpha"]),
        "type": lambda p: p.update(logicalType="integer", physicalType="INTEGER")}
    for name, change in changes.items():
        doc, _ = load_yaml(exported)
        assert doc is not None
        change(prop(doc.data, "category"))
        wrong = tmp_path / f"wrong-{name.replace(' ', '-')}.odcs.yaml"
        wrong.write_text(dump_yaml(doc.data))
        code, report = _datacontract_test(datacontract, wrong)
        assert code != 0 and report["result"] == "failed", name


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """The demo mesh as `trustmesh demo` leaves it, built once for the module."""
    ws = governed_demo(tmp_path_factory.mktemp("demo") / "mesh")
    yield ws
    ws.close()


def _datacontract_verdict(script: Path, contract_file: Path) -> str | None:
    """Why datacontract-cli rejects an exported contract (`lint`, then `test` on its data), or None if it passes."""
    lint = subprocess.run([str(script), "lint", str(contract_file)], capture_output=True, text=True, timeout=600)
    if lint.returncode != 0:
        return f"`datacontract lint` exited {lint.returncode}:\n{lint.stdout}{lint.stderr}"
    code, report, output = _datacontract_run(script, contract_file)
    if report is None:
        return f"`datacontract test` exited {code} and wrote no report:\n{output[-4000:]}"
    unexpected = _unexpected_checks(report)
    if code != 0 or report["result"] not in ("passed", "warning") or unexpected:
        return (f"`datacontract test` exited {code}, result {report['result']}; checks not passed: "
                f"{json.dumps(unexpected, indent=1)}\n{output[-4000:]}")
    return None


@pytest.mark.slow
def test_datacontract_cli_lints_and_tests_every_exported_demo_dataset(datacontract: Path, demo: Workspace,
                                                                     tmp_path: Path) -> None:
    addresses = sorted(demo.mesh.datasets)
    assert {FLIGHTS, "noaa.weather-dp.weather"} <= set(addresses)
    failures = []
    for address in addresses:
        exported = tmp_path / f"{address}.odcs.yaml"
        result = cli("export", address, "--output", str(exported), "--mesh", str(demo.root))
        verdict = (f"`trustmesh contract export` exited {result.exit_code}: {result.output}" if result.exit_code
                   else _datacontract_verdict(datacontract, exported))
        if verdict:
            failures.append(f"{address}: {verdict}")
    assert not failures, f"{len(failures)} of {len(addresses)} exported demo contracts fail datacontract-cli:\n\n" \
        + "\n\n".join(failures)


# Every type family a DuckDB build publishes: column → (SQL, logicalType, physicalType or None)
EVERY_TYPE: dict[str, tuple[str, str, str | None]] = {
    "tiny": ("CAST(record_id AS TINYINT)", "integer", None),
    "huge": ("CAST(record_id AS HUGEINT)", "integer", None),
    "unsigned": ("CAST(record_id AS UBIGINT)", "integer", None),
    "counted": ("CAST(record_id AS INT)", "integer", "INT4"),
    "real_amount": ("CAST(amount AS FLOAT)", "number", None),
    "exact_amount": ("CAST(amount AS DECIMAL(12,3))", "number", "NUMERIC(12,3)"),
    "at_naive": ("CAST(recorded_on AS TIMESTAMP)", "timestamp", None),
    "at_zoned": ("CAST(recorded_on AS TIMESTAMPTZ)", "timestamp", "TIMESTAMP WITH TIME ZONE"),
    "at_ns": ("CAST(recorded_on AS TIMESTAMP_NS)", "timestamp", None),
    "at_time": ("TIME '12:30:00'", "time", None),
    "flag": ("record_id > 1", "boolean", "BOOL"),
    "ref": ("CAST('6f1c1b8e-1d2b-4c3a-9e8f-0a1b2c3d4e5f' AS UUID)", "string", None),
    "waited": ("INTERVAL 3 DAY", "string", None),
    "raw_bytes": ("CAST(category AS BLOB)", "string", None),
    "ids": ("[record_id, record_id + 1]", "array", None),
    "detail": ("{'id': record_id, 'seen': CAST(recorded_on AS TIMESTAMP), 'tags': [category]}", "object", None),
    "by_category": ("MAP {category: amount}", "object", None),
    "legs": ("[{'n': amount}]", "array", None),
    "reserved": ("{'order': record_id}", "object", None),
}


def _every_type(root: Path) -> None:
    """The scaffolded flights product with a column of every type family the platform publishes."""
    folder = root / "domains/bts/products/flights-dp"
    (folder / "sql/flights.sql").write_text(
        "SELECT record_id, recorded_on, category, amount,\n       "
        + ",\n       ".join(f"{sql} AS {name}" for name, (sql, _, _) in EVERY_TYPE.items()) + "\nFROM raw_records\n",
        encoding="utf-8")

    def typed(d: dict[str, Any]) -> None:
        d["schema"][0]["properties"] += [
            {"name": name, "logicalType": logical, "description": f"The {name}.", "classification": "official-open",
             **({"physicalType": physical} if physical else {})}
            for name, (_, logical, physical) in EVERY_TYPE.items()]

    _edit_yaml(folder / "contracts/flights.odcs.yaml", typed)


def _table_types(report: dict[str, Any]) -> dict[str, str]:
    """The columns of the table datacontract-cli loaded the data into, from its run log."""
    import ast

    info = next(log["message"] for log in report["logs"] if log["message"].startswith("DuckDB Table Info: "))
    return {row[1]: row[2] for row in ast.literal_eval(info.removeprefix("DuckDB Table Info: "))}


@pytest.mark.slow
def test_datacontract_cli_reads_every_published_type_as_published(datacontract: Path, tmp_path: Path) -> None:
    import duckdb

    root = _mesh(tmp_path / "mesh", "bts")
    new_product(root, "bts", "flights-dp")
    _every_type(root)
    ws = Workspace.open(root)
    try:
        result = ws.build()
        assert result.ok, result.to_dict()
        files = ws.export_contract(FLIGHTS).data_files
    finally:
        ws.close()
    exported = tmp_path / "flights.odcs.yaml"
    assert cli("export", FLIGHTS, "--output", str(exported), "--mesh", str(root)).exit_code == 0
    assert _datacontract_verdict(datacontract, exported) is None
    _, report, _ = _datacontract_run(datacontract, exported)
    assert report is not None
    with duckdb.connect() as con:
        published = {name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM read_parquet({files!r})").fetchall()}
    # What the published file holds, as datacontract-cli holds it: the same type, save those it has no name for.
    text_there = {"reserved": "VARCHAR"}  # a struct field named `order` must be quoted, which it does not do
    assert _table_types(report) == published | text_there


def test_an_s3_location_names_one_object_or_the_part_files_of_one_build() -> None:
    from trustmesh.contracts.export import s3_location

    parts = ["s3://b/m/data/a/p/d/20261204-x.parquet/part-0.parquet", "s3://b/m/data/a/p/d/20261204-x.parquet/part-1.parquet"]
    assert s3_location(parts[:1], "a.p.d", 1) == parts[0]
    assert s3_location(parts, "a.p.d", 1) == "s3://b/m/data/a/p/d/20261204-x.parquet/*.parquet"
    with pytest.raises(UsageError, match="not in one folder of their own"):  # a glob would catch other versions
        s3_location(["s3://b/m/data/a/p/d/v1.parquet", "s3://b/m/data/a/p/d/v2.parquet"], "a.p.d", 1)
