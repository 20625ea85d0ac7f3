"""A published version's contract as a self-contained ODCS v3.1.0 document that outside tools can test.

The document keeps the contract as registered and adds one `local` server pointing at exactly the Parquet
files of that version, so `datacontract test` (or any ODCS tool) checks the data consumers actually read.
Each column's `physicalType` is the type that column has in those files, spelled the way datacontract-cli's
DuckDB server reads types: it builds its table of the data from these names, so a DuckDB spelling it does not
know (`TIMESTAMP WITH TIME ZONE`) would leave a column without a type, and its bare `timestamp` is a zoned one.

    >>> doc = export_contract(contract, address="bts.flights-dp.flights", data_files=files, version=3)
    >>> doc["servers"][0]["type"], doc["servers"][0]["format"]
    ('local', 'parquet')
"""

from __future__ import annotations

import copy
import functools
import glob
import os
import re
from collections.abc import Mapping
from typing import Any

from sqlglot import exp
from sqlglot.errors import ParseError

from trustmesh.engines import QueryFailed, get_engine
from trustmesh.engines.duckdb import DEFAULT_TYPES, publish_type
from trustmesh.errors import TrustmeshError, UsageError
from trustmesh.standards import ODCS, schema_errors

SERVER = "trustmesh"
PROPERTY_ADDRESS = "trustmeshAddress"
PROPERTY_VERSION = "trustmeshVersion"

T = exp.DataType.Type
# A DuckDB type → its physicalType for datacontract-cli (`convert_to_duckdb` reads the name before any
# parameters, lower-cased, and makes a DuckDB type of it) and the logical type of a nested field the contract
# does not declare. Its bare `timestamp` means TIMESTAMP WITH TIME ZONE, so naive and zoned timestamps take
# its `_ntz`/`_tz` names. Unsigned and 128-bit integers, which it has no name for, take a type that holds
# every value (what the platform publishes them as at the top level).
SERVER_TYPES = {
    T.BOOLEAN: ("BOOLEAN", "boolean"),
    T.TINYINT: ("TINYINT", "integer"), T.SMALLINT: ("SMALLINT", "integer"), T.INT: ("INTEGER", "integer"),
    T.BIGINT: ("BIGINT", "integer"), T.UTINYINT: ("SMALLINT", "integer"), T.USMALLINT: ("INTEGER", "integer"),
    T.UINT: ("BIGINT", "integer"), T.UBIGINT: ("DECIMAL(20,0)", "integer"), T.INT128: ("DECIMAL(38,0)", "integer"),
    T.UINT128: ("DECIMAL(38,0)", "integer"),
    T.FLOAT: ("FLOAT", "number"), T.DOUBLE: ("DOUBLE", "number"),
    T.TEXT: ("VARCHAR", "string"), T.VARCHAR: ("VARCHAR", "string"), T.VARBINARY: ("BLOB", "string"),
    T.DATE: ("DATE", "date"), T.TIME: ("TIME", "time"),
    T.TIMESTAMPNTZ: ("TIMESTAMP_NTZ", "timestamp"), T.TIMESTAMP: ("TIMESTAMP_NTZ", "timestamp"),
    T.TIMESTAMP_S: ("TIMESTAMP_NTZ", "timestamp"), T.TIMESTAMP_MS: ("TIMESTAMP_NTZ", "timestamp"),
    T.TIMESTAMP_NS: ("TIMESTAMP_NTZ", "timestamp"), T.TIMESTAMPTZ: ("TIMESTAMP_TZ", "timestamp"),
}
# Any other DuckDB type (UUID, INTERVAL, JSON, ENUM, UNION, BIT, TIME WITH TIME ZONE …) has no name there; its
# values read as text, as every DuckDB value casts to VARCHAR.
TEXT_TYPE = ("VARCHAR", "string")


def export_contract(contract_doc: dict[str, Any], *, address: str, data_files: list[str], version: int,
                    endpoint: str | None = None) -> dict[str, Any]:
    """The contract with a server for version `version`'s files, and the version noted: `local` for files on
    disk, `s3` (with `endpoint`, for an S3-compatible store) for a warehouse on object storage.

    Servers already in the contract are replaced: the exported document says where *this* version is.
    """
    doc = copy.deepcopy(contract_doc)
    doc["id"] = address
    description = f"The Parquet data of {address} version {version}, as published by trustmesh."
    if data_files and all(f.startswith("s3://") for f in data_files):
        server: dict[str, Any] = {"server": SERVER, "type": "s3", "format": "parquet",
                                  "location": s3_location(data_files, address, version), "description": description}
        if endpoint:
            server["endpointUrl"] = endpoint
    else:
        server = {"server": SERVER, "type": "local", "format": "parquet",
                  "path": data_path(data_files, address, version), "description": description}
    doc["servers"] = [server]
    published = published_types(data_files)
    for obj in doc.get("schema") or []:
        for prop in obj.get("properties") or []:
            set_server_type(prop, parse_type(published.get(prop.get("name", "")) or contract_type(prop)))
    notes = [{"property": PROPERTY_ADDRESS, "value": address},
             {"property": PROPERTY_VERSION, "value": version,
              "description": "The trustmesh version (Iceberg snapshot) whose data files the server points at."}]
    kept = [cp for cp in doc.get("customProperties") or []
            if not (isinstance(cp, dict) and cp.get("property") in (PROPERTY_ADDRESS, PROPERTY_VERSION))]
    doc["customProperties"] = kept + notes
    errors = schema_errors(ODCS, doc)
    if errors:
        raise TrustmeshError(f"the exported contract of {address} is not valid ODCS v3.1.0: "
                             + "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5])
                             + " — fix: `trustmesh validate` the contract and rebuild")
    return doc


def s3_location(data_files: list[str], address: str, version: int) -> str:
    """The object, or a glob of the one candidate folder (a Spark build's part files) that holds only this version."""
    if len(data_files) == 1:
        return data_files[0]
    folder = os.path.commonpath([f.removeprefix("s3://") for f in data_files])
    if folder.endswith(".parquet") and all(f.removeprefix("s3://").rsplit("/", 1)[0] == folder for f in data_files):
        return f"s3://{folder}/*.parquet"
    raise UsageError(f"the {len(data_files)} objects of {address} version {version} are not in one folder of their "
                     "own, and one ODCS `s3` location cannot name them alone — fix: export a version written as one file")


def data_path(data_files: list[str], address: str, version: int) -> str:
    """One path for the server: the file itself, or a glob that matches exactly the version's files and no others.

    A dataset's folder holds the files of every version, so a folder-wide glob is used only when it matches
    nothing else.
    """
    paths = [f.removeprefix("file://") for f in data_files]
    if not paths:
        raise UsageError(f"{address} version {version} has no data files — fix: rebuild it (`trustmesh build {address}`)")
    remote = [p for p in paths if "://" in p]
    if remote:
        raise UsageError(f"{address} version {version} is stored at {remote[0]}, not on a local disk — fix: export "
                         "from a machine that mounts the warehouse as a folder")
    if len(paths) == 1:
        return paths[0]
    folder = os.path.commonpath(paths)
    pattern = os.path.join(folder, "**", "*.parquet")
    if sorted(os.path.abspath(p) for p in glob.glob(pattern, recursive=True)) == sorted(map(os.path.abspath, paths)):
        return pattern
    raise UsageError(f"the {len(paths)} files of {address} version {version} share {folder} with other versions' "
                     "files, and one ODCS `local` path cannot name them alone — fix: export a version written as one file")



def published_types(data_files: list[str]) -> dict[str, str]:
    """The DuckDB type of each column of the version's Parquet files, as datacontract-cli will read them.

    Empty when the files are not on this machine's disk, or not readable here: then the contract says what the
    build cast each column to.
    """
    paths = [f.removeprefix("file://") for f in data_files]
    if not paths or not all("://" not in p and os.path.isfile(p) for p in paths):
        return {}
    session = get_engine("duckdb", sorted({os.path.dirname(os.path.abspath(p)) for p in paths})).session(tokens=False)
    try:
        session.bind_parquet("exported", paths)
        return {c.name: c.type for c in session.describe('SELECT * FROM "exported"')}
    except QueryFailed:
        return {}
    finally:
        session.close()


def contract_type(prop: Mapping[str, Any]) -> str:
    """The DuckDB type a build publishes a column as, by its contract: the physicalType as cast on publish, or
    the type standing for its logical type."""
    default = DEFAULT_TYPES.get(str(prop.get("logicalType")), "VARCHAR")
    physical = prop.get("physicalType")
    return publish_type(default, str(physical) if physical else None) or default


def parse_type(duckdb_type: str) -> exp.DataType:
    """A DuckDB type name, parsed; a name sqlglot does not know reads as text, as every DuckDB value can."""
    try:
        return exp.DataType.build(duckdb_type, dialect="duckdb")
    except (ParseError, ValueError):
        return exp.DataType.build("VARCHAR", dialect="duckdb")


def set_server_type(prop: dict[str, Any], dtype: exp.DataType) -> None:
    """Set a property's physicalType, and its `items` or nested `properties`, so that datacontract-cli makes
    `dtype` of them.

    A list is an `array` of its element's type; a struct an `object` whose nested properties name every field
    (the contract's own, then any it does not declare). datacontract-cli writes a struct's field names unquoted,
    so a struct with a name that needs quotes is read as text. A map passes through as DuckDB spells it.
    """
    kind = dtype.this
    if kind in (T.ARRAY, T.LIST) and dtype.expressions:
        prop["physicalType"] = "array"
        items = dict(prop.get("items") or {})
        set_server_type(items, dtype.expressions[0])
        items.setdefault("logicalType", logical_of(dtype.expressions[0]))
        prop["items"] = items
    elif kind == T.STRUCT and dtype.expressions and all(plain_name(f.name) for f in dtype.expressions):
        prop["physicalType"] = "object"
        declared = {p.get("name"): p for p in prop.get("properties") or []}
        fields = []
        for field in dtype.expressions:
            field_type = field.args["kind"]
            nested = dict(declared.pop(field.name, None) or {"name": field.name, "logicalType": logical_of(field_type)})
            set_server_type(nested, field_type)
            fields.append(nested)
        prop["properties"] = fields + list(declared.values())  # declared but absent: datacontract-cli says so
    elif kind == T.MAP:
        prop["physicalType"] = dtype.sql(dialect="duckdb")
    elif kind == T.DECIMAL:
        precision, scale = [p.sql() for p in dtype.expressions] if len(dtype.expressions) == 2 else ["18", "3"]
        prop["physicalType"] = f"DECIMAL({precision},{scale})"
    else:
        prop["physicalType"] = SERVER_TYPES.get(kind, TEXT_TYPE)[0]


def logical_of(dtype: exp.DataType) -> str:
    """The ODCS logical type of a DuckDB type, for a nested field the contract does not describe."""
    kind = dtype.this
    if kind in (T.ARRAY, T.LIST):
        return "array"
    if kind in (T.STRUCT, T.MAP):
        return "object"
    if kind == T.DECIMAL:
        return "number"
    return SERVER_TYPES.get(kind, TEXT_TYPE)[1]


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def plain_name(name: str) -> bool:
    """Whether DuckDB reads `name` unquoted as a struct field: an identifier that is no keyword it reserves."""
    return bool(_IDENTIFIER.fullmatch(name)) and name.lower() not in reserved_words()


@functools.cache
def reserved_words() -> frozenset[str]:
    """The keywords DuckDB reserves, in full or as type and function names (`order`, `at`), as DuckDB lists them."""
    session = get_engine("duckdb").session(tokens=False)  # reads no file
    try:
        rows = session.query("SELECT keyword_name FROM duckdb_keywords() "
                             "WHERE keyword_category NOT IN ('unreserved', 'column_name')")
    finally:
        session.close()
    return frozenset(str(r[0]).lower() for r in rows)
