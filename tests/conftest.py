"""Shared fixtures: a small mesh written from {path: content} dicts, and the PostgreSQL server when present."""

from __future__ import annotations

import contextlib
import copy
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meshfactory import base_files, grant_product_inputs, write_files

from trustmesh.errors import InvalidMesh, MetastoreUnavailable
from trustmesh.service import Workspace

REPO = Path(__file__).resolve().parents[1]
STANDARDS = REPO.parent / "shared" / "standards"
PG_URL = os.environ.get("TRUSTMESH_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/postgres")
# `TRUSTMESH_TEST_METASTORE=postgresql pytest …` puts every mesh `make_mesh` opens on a fresh PostgreSQL database
METASTORE_TIER = os.environ.get("TRUSTMESH_TEST_METASTORE", "sqlite")


@pytest.fixture
def files() -> dict[str, Any]:
    return copy.deepcopy(base_files())


@pytest.fixture
def make_mesh(tmp_path: Path) -> Any:
    """make_mesh(files, **overrides) → a Workspace on a fresh mesh folder written from the dicts.

    With `grants` (the default) every product reading another domain gets its grant through the access
    workflow, as a mesh's people would do before its first build.
    """
    opened: list[Workspace] = []
    databases: list[str] = []

    def make(files: dict[str, Any] | None = None, metastore_url: str | None = None, grants: bool = True) -> Workspace:
        root = tmp_path / f"mesh{len(opened)}"
        files = copy.deepcopy(files) if files is not None else base_files()
        if metastore_url is None and METASTORE_TIER == "postgresql" and isinstance(files.get("mesh.yaml"), dict):
            reason = _postgres_available()
            if reason:
                pytest.skip(reason)
            databases.append(_create_database())  # in mesh.yaml, so the CLI in a subprocess uses it too
            files["mesh.yaml"].setdefault("platform", {}).setdefault("metastore", databases[-1])
        write_files(root, files)
        ws = Workspace.open(root, metastore_url=metastore_url)
        opened.append(ws)
        if grants:
            with contextlib.suppress(InvalidMesh, MetastoreUnavailable):  # a test of a broken mesh or metastore
                grant_product_inputs(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()
    for url in databases:
        _drop_database(url)


def _postgres_available() -> str | None:
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    reason = _postgres_available()
    if reason:
        pytest.skip(reason)
    url = _create_database()
    try:
        yield url
    finally:
        _drop_database(url)


def _create_database() -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"trustmesh_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()
