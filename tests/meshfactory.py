"""Builds small mesh repos from {path: content} dicts, like dbt's project fixture."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from trustmesh.yamlfile import dump_yaml

PG_URL = os.environ.get("TRUSTMESH_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/postgres")
# `TRUSTMESH_TEST_METASTORE=postgresql pytest …` puts every test mesh (make_mesh, governed_demo) on a fresh
# PostgreSQL database of its own, dropped when the test (or the session, for module-wide meshes) ends.
METASTORE_TIER = os.environ.get("TRUSTMESH_TEST_METASTORE", "sqlite")
created_databases: list[str] = []  # by create_database, until drop_database


def postgres_unavailable() -> str | None:
    """None when the PostgreSQL server answers, else why not (the reason a test skips with)."""
    try:
        import psycopg  # noqa: F401
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"no PostgreSQL server answers at {PG_URL} ({type(exc).__name__}); set TRUSTMESH_TEST_POSTGRES"


def create_database() -> str:
    """A fresh, empty database on the test server; its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"trustmesh_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    created_databases.append(url)
    return url


def drop_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()
    if url in created_databases:
        created_databases.remove(url)


def tier_metastore(mesh_yaml: dict[str, Any]) -> None:
    """In the PostgreSQL tier, point a mesh.yaml at a fresh database (so CLIs in subprocesses use it too)."""
    if METASTORE_TIER != "postgresql":
        return
    import pytest

    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    mesh_yaml.setdefault("platform", {}).setdefault("metastore", create_database())


def person(pid: str, *roles: str) -> dict[str, Any]:
    return {"id": pid, "name": pid.replace("-", " ").title(), "email": f"{pid}@example.gov.sg", "roles": list(roles)}


def domain_yaml(name: str, kind: str = "ssot", sector: str = "transport") -> dict[str, Any]:
    return {"name": name, "kind": kind, "sector": sector, "description": f"The {name} domain.",
            "people": [person(f"{name}-owner", "data-owner"), person(f"{name}-steward", "data-domain-steward"),
                       person(f"{name}-dev", "developer", "data-product-owner")],
            "glossary": [{"term": f"{name}-term", "definition": f"A term of {name}."}]}


def column(name: str, logical: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "logicalType": logical, "description": f"The {name.replace('_', ' ')}.",
            "classification": extra.pop("classification", "official-open"), **extra}


def contract_yaml(domain: str, product: str, dataset: str, columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v3.1.0", "kind": "DataContract", "id": f"{domain}.{product}.{dataset}", "name": dataset,
            "version": "1.0.0", "status": "active", "domain": domain, "dataProduct": product,
            "description": {"purpose": f"{dataset} of {product}"},
            "schema": [{"name": dataset, "physicalType": "table", "description": f"The {dataset} dataset.",
                        "properties": columns}]}


def product_yaml(domain: str, product: str, outputs: list[str], inputs: list[dict[str, Any]],
                 kind: str = "source-aligned") -> dict[str, Any]:
    return {"apiVersion": "v1.0.0", "kind": "DataProduct", "id": f"{domain}.{product}", "name": product,
            "domain": domain, "status": "active", "version": "1.0.0",
            "description": {"purpose": f"The {product} product.", "usage": "Tests.", "limitations": "None."},
            "team": {"members": [{"username": f"{domain}-dev", "role": "data-product-owner"}]},
            "customProperties": [{"property": "productKind", "value": kind}],
            "inputPorts": inputs,
            "outputPorts": [{"name": o, "version": "1.0.0", "contractId": f"{domain}.{product}.{o}"} for o in outputs]}


def file_input(name: str, path: str, fmt: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"type": "file", "path": path}
    if fmt:
        source["format"] = fmt
    return {"name": name, "version": "1.0.0", "contractId": f"source.{name}",
            "customProperties": [{"property": "source", "value": source}]}


def product_input(address: str, name: str | None = None) -> dict[str, Any]:
    return {"name": name or address.rsplit(".", 1)[1], "version": "1.0.0", "contractId": address,
            "customProperties": [{"property": "source", "value": {"type": "product", "address": address}}]}


ITEMS_CSV = "item_id,name,price,sold_on\n1,apple,1.5,2024-01-01\n2,pear,2.0,2024-01-02\n3,plum,0.5,2024-01-02\n"


def base_files() -> dict[str, Any]:
    """Two domains: alpha.shop-dp publishes items from a CSV; beta.stats-dp aggregates them."""
    shop = "domains/alpha/products/shop-dp"
    stats = "domains/beta/products/stats-dp"
    return {
        "mesh.yaml": {"name": "test-mesh", "description": "A mesh for tests.",
                      "governance": {"glossary": [{"term": "price", "definition": "What an item costs."}]},
                      "people": [person("gdo", "governance-admin")]},
        "domains/alpha/domain.yaml": domain_yaml("alpha"),
        "domains/beta/domain.yaml": domain_yaml("beta", kind="trusted-centre"),
        f"{shop}/product.yaml": product_yaml("alpha", "shop-dp", ["items", "cheap_items"],
                                             [file_input("raw_items", "data/items.csv")]),
        f"{shop}/data/items.csv": ITEMS_CSV,
        f"{shop}/sql/items.sql": "SELECT item_id, name, price, sold_on FROM raw_items\n",
        f"{shop}/sql/cheap_items.sql": "SELECT item_id, name FROM raw_items WHERE price < 1.8\n",
        f"{shop}/contracts/items.odcs.yaml": contract_yaml("alpha", "shop-dp", "items", [
            column("item_id", "integer", required=True, primaryKey=True, primaryKeyPosition=1, physicalType="BIGINT"),
            column("name", "string", required=True),
            column("price", "number", physicalType="DOUBLE",
                   customProperties=[{"property": "glossaryTerm", "value": "price"}]),
            column("sold_on", "date"),
        ]),
        f"{shop}/contracts/cheap_items.odcs.yaml": contract_yaml("alpha", "shop-dp", "cheap_items", [
            column("item_id", "integer", required=True, primaryKey=True, primaryKeyPosition=1),
            column("name", "string"),
        ]),
        f"{stats}/product.yaml": product_yaml("beta", "stats-dp", ["daily_sales"],
                                              [product_input("alpha.shop-dp.items")], kind="aggregated"),
        f"{stats}/sql/daily_sales.sql": 'SELECT sold_on, count(*) AS items, sum(price) AS revenue\n'
                                        'FROM alpha."shop-dp".items GROUP BY sold_on\n',
        f"{stats}/contracts/daily_sales.odcs.yaml": contract_yaml("beta", "stats-dp", "daily_sales", [
            column("sold_on", "date", required=True, primaryKey=True, primaryKeyPosition=1),
            column("items", "integer"),
            column("revenue", "number"),
        ]),
    }


def write_files(root: Path, files: dict[str, Any]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.unlink(missing_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(dump_yaml(content), encoding="utf-8")
    return root


def grant_product_inputs(ws: Any, days: int = 365) -> list[str]:
    """Run the access workflow for every product that reads another domain: its domain's developer asks,
    the provider's steward (then data owner, for two levels) approves. Returns the grant ids."""
    from trustmesh.access.model import PRODUCT

    directory = ws.directory()
    grants = []
    for principal in directory.principals.values():
        if principal.kind != PRODUCT:
            continue
        product = directory.mesh.products[principal.id]
        for address in product.upstream_addresses:
            ds = directory.datasets.get(address)
            if ds is None or ds.domain == product.domain:
                continue
            asker = next(p.id for p in directory.principals.values()
                         if p.kind == "person" and product.domain in p.member_of())
            req = ws.access.request(asker, address, purpose=f"Input of {product.address}, built nightly",
                                    purpose_category="product-input", days=days, for_product=product.address,
                                    unmask=ds.personal_columns or None)
            while req["state"] == "pending":
                req = ws.access.approve(req["awaiting"][0], req["id"], note="input port reviewed")
            grants.append(req["grant"])
    return grants


def governed_demo(root: Path) -> Any:
    """The demo mesh as `trustmesh demo` leaves it: written, access seeded, built, and the Trusted Centre's
    policy update applied (carriers unfit, health at-risk). Returns its Workspace (the caller closes it)."""
    from trustmesh.demo import policy_update, write_demo
    from trustmesh.demo.access import seed_access
    from trustmesh.service import Workspace

    write_demo(root)
    if METASTORE_TIER == "postgresql":
        import yaml

        mesh_yaml = yaml.safe_load((root / "mesh.yaml").read_text())
        tier_metastore(mesh_yaml)
        (root / "mesh.yaml").write_text(yaml.safe_dump(mesh_yaml, sort_keys=False))
    ws = Workspace.open(root)
    assert seed_access(ws)
    result = ws.build()
    assert result.ok, [r.to_dict() for r in result.products if r.status != "published"]
    assert policy_update(ws.root)
    ws.governance.apply(ws.mesh, "ravi")
    return ws


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now, for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


ITEMS = "alpha.shop-dp.items"


def ask_for_items(ws: Any, who: str = "beta-dev") -> dict[str, Any]:
    """`who` asks for alpha's items, for a dashboard (one audited request)."""
    result: dict[str, Any] = ws.access.request(who, ITEMS, purpose="Weekly sales dashboard for the beta team",
                                               purpose_category="statistics", days=30)
    return result


def audit_rows(ws: Any) -> list[dict[str, Any]]:
    """Every audit entry as the metastore holds it, in order."""
    from sqlalchemy import select

    from trustmesh.metastore.schema import AuditRow

    table = AuditRow.__table__
    with ws.store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(table).order_by(table.c.seq))]


def tamper(ws: Any, *statements: Any) -> None:
    """Run Core statements straight on the metastore, bypassing `audit.append`, as a tamperer would."""
    with ws.store.engine.begin() as c:
        for statement in statements:
            c.execute(statement)


def spark_missing() -> str | None:
    """Why the Spark engine cannot run here (for a skip), or None."""
    import shutil

    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'trustmesh[spark]')"
    return None if shutil.which("java") else "no java on PATH: Spark needs Java 17+"

