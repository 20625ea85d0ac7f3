"""A published version's contract as a self-contained ODCS v3.1.0 document that outside tools can test.

The document keeps the contract as registered and adds one `local` server pointing at exactly the Parquet
files of that version, so `datacontract test` (or any ODCS tool) checks the data consumers actually read.

    >>> doc = export_contract(contract, address="bts.flights-dp.flights", data_files=files, version=3)
    >>> doc["servers"][0]["type"], doc["servers"][0]["format"]
    ('local', 'parquet')
"""

from __future__ import annotations

import copy
import glob
import os
from typing import Any

from trustmesh.errors import TrustmeshError, UsageError
from trustmesh.standards import ODCS, schema_errors

SERVER = "trustmesh"
PROPERTY_ADDRESS = "trustmeshAddress"
PROPERTY_VERSION = "trustmeshVersion"


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
