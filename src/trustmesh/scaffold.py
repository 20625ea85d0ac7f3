"""Scaffolding: a new mesh, domain or product that validates and builds as written."""

from __future__ import annotations

import re
from pathlib import Path

from trustmesh.descriptors.models import DATASET_PATTERN, NAME_PATTERN
from trustmesh.errors import UsageError
from trustmesh.yamlfile import dump_yaml

GITIGNORE = ".trustmesh/\n"


def _check_name(kind: str, name: str, pattern: str = NAME_PATTERN) -> None:
    if not re.match(pattern, name):
        raise UsageError(f"{kind} name {name!r} is not valid — fix: use lower-case letters, digits, '-' and '_', "
                         "starting with a letter")


def init_mesh(folder: Path, name: str | None = None) -> Path:
    """A mesh skeleton: mesh.yaml, domains/, and a .gitignore for the local platform state."""
    if (folder / "mesh.yaml").exists():
        raise UsageError(f"{folder} already holds a mesh (mesh.yaml exists) — fix: pick another folder")
    mesh_name = name or re.sub(r"[^a-z0-9_-]", "-", folder.resolve().name.lower()).strip("-") or "mesh"
    if not re.match(NAME_PATTERN, mesh_name):
        mesh_name = f"mesh-{mesh_name}"
    (folder / "domains").mkdir(parents=True, exist_ok=True)
    (folder / "mesh.yaml").write_text(dump_yaml({
        "name": mesh_name,
        "description": "Data products shared across agencies.",
        "platform": {"metastore": "sqlite:///.trustmesh/metastore.db", "warehouse": ".trustmesh/warehouse",
                     "engine": "duckdb"},
        "governance": {"glossary": []},
        "people": [{"id": "gdo-admin", "name": "Governance Admin", "email": "gdo-admin@example.gov.sg",
                    "roles": ["governance-admin"]}],
    }), encoding="utf-8")
    (folder / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    return folder / "mesh.yaml"


def _check_mesh(root: Path) -> None:
    if not (root / "mesh.yaml").is_file():
        raise UsageError(f"no mesh at {root} (it has no mesh.yaml) — fix: `trustmesh init {root}` first, or name "
                         "the mesh with --mesh")


def new_domain(root: Path, name: str, kind: str = "ssot", sector: str = "general") -> Path:
    _check_mesh(root)
    _check_name("domain", name)
    _check_name("sector", sector)
    if kind not in ("ssot", "trusted-centre"):
        raise UsageError(f"kind {kind!r} is not valid — fix: use ssot or trusted-centre")
    folder = root / "domains" / name
    if (folder / "domain.yaml").exists():
        raise UsageError(f"domain {name} already exists ({folder / 'domain.yaml'})")
    folder.mkdir(parents=True, exist_ok=True)
    people = [
        {"id": f"{name}-owner", "name": f"{name} data owner", "email": f"owner@{name}.gov.sg", "roles": ["data-owner"]},
        {"id": f"{name}-steward", "name": f"{name} data domain steward", "email": f"steward@{name}.gov.sg",
         "roles": ["data-domain-steward"]},
        {"id": f"{name}-dpo", "name": f"{name} data product owner", "email": f"dpo@{name}.gov.sg",
         "roles": ["data-product-owner"]},
        {"id": f"{name}-dev", "name": f"{name} developer", "email": f"dev@{name}.gov.sg", "roles": ["developer"]},
    ]
    (folder / "domain.yaml").write_text(dump_yaml({
        "name": name, "kind": kind, "sector": sector,
        "description": f"The {name} domain. Describe what it owns and whom it serves.",
        "people": people, "glossary": [],
    }), encoding="utf-8")
    (folder / "products").mkdir(exist_ok=True)
    return folder / "domain.yaml"


def new_product(root: Path, domain: str, name: str, dataset: str | None = None) -> Path:
    """A source-aligned product reading an example CSV into one gold dataset, ready to build."""
    _check_mesh(root)
    _check_name("product", name)
    dataset = dataset or re.sub(r"[^a-z0-9_]", "_", name.removesuffix("-dp"))
    _check_name("dataset", dataset, DATASET_PATTERN)
    domain_dir = root / "domains" / domain
    if not (domain_dir / "domain.yaml").exists():
        raise UsageError(f"no domain {domain} — fix: `trustmesh new domain {domain}` first")
    folder = domain_dir / "products" / name
    if (folder / "product.yaml").exists():
        raise UsageError(f"product {domain}/{name} already exists ({folder / 'product.yaml'})")
    address = f"{domain}.{name}.{dataset}"
    for sub in ("contracts", "sql", "data"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "data" / "records.csv").write_text(
        "record_id,recorded_on,category,amount\n1,2024-01-02,alpha,10.5\n2,2024-01-03,beta,7.25\n3,2024-01-04,alpha,3.0\n",
        encoding="utf-8")
    (folder / "sql" / f"{dataset}.sql").write_text(
        "-- One SELECT producing the dataset. Inputs are read by input port name, or by another\n"
        "-- product's address (quote hyphenated parts: \"ssot-a\".\"busroutes-dp\".routes).\n"
        "SELECT\n    record_id,\n    recorded_on,\n    category,\n    amount\nFROM raw_records\n",
        encoding="utf-8")
    owner = f"{domain}-dpo"
    (folder / "product.yaml").write_text(dump_yaml({
        "apiVersion": "v1.0.0", "kind": "DataProduct", "id": f"{domain}.{name}", "name": name, "domain": domain,
        "status": "draft", "version": "0.1.0",
        "description": {"purpose": f"What {name} is for, in one sentence.", "usage": "How consumers should use it.",
                        "limitations": "What it does not cover."},
        "tags": [domain],
        "team": {"name": f"{name} team", "members": [{"username": owner, "role": "data-product-owner"}]},
        "customProperties": [{"property": "productKind", "value": "source-aligned"},
                             {"property": "tier", "value": "gold"}],
        "inputPorts": [{"name": "raw_records", "version": "1.0.0", "contractId": f"source.{domain}.{name}.raw_records",
                        "customProperties": [{"property": "source",
                                              "value": {"type": "file", "format": "csv", "path": "data/records.csv"}}]}],
        "outputPorts": [{"name": dataset, "version": "1.0.0", "type": "tables",
                         "description": f"The {dataset} dataset.", "contractId": address}],
    }), encoding="utf-8")

    def col(n: str, t: str, d: str, **kw: object) -> dict[str, object]:
        return {"name": n, "logicalType": t, "description": d, "required": kw.pop("required", False),
                "classification": "official-open", **kw}

    (folder / "contracts" / f"{dataset}.odcs.yaml").write_text(dump_yaml({
        "apiVersion": "v3.1.0", "kind": "DataContract", "id": address, "name": dataset, "version": "0.1.0",
        "status": "draft", "domain": domain, "dataProduct": name,
        "description": {"purpose": f"The promise {name} makes about {dataset}."},
        "schema": [{"name": dataset, "physicalType": "table", "description": f"One row per record of {dataset}.",
                    "properties": [
                        col("record_id", "integer", "Identifier of the record.", required=True, primaryKey=True,
                            primaryKeyPosition=1, physicalType="BIGINT"),
                        col("recorded_on", "date", "Day the record was made."),
                        col("category", "string", "Category of the record."),
                        col("amount", "number", "Amount recorded.", physicalType="DOUBLE"),
                    ]}],
        "slaProperties": [{"property": "frequency", "value": 1, "unit": "d"}],
        "team": {"name": f"{name} team", "members": [{"username": owner, "role": "data-product-owner"}]},
    }), encoding="utf-8")
    return folder / "product.yaml"
