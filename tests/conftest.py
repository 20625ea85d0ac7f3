"""Shared fixtures: a small mesh written from {path: content} dicts, and the PostgreSQL server when present."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from meshfactory import (
    METASTORE_TIER,
    base_files,
    create_database,
    created_databases,
    drop_database,
    grant_product_inputs,
    postgres_unavailable,
    tier_metastore,
    write_files,
)

from trustmesh.errors import InvalidMesh, MetastoreUnavailable
from trustmesh.service import Workspace

REPO = Path(__file__).resolve().parents[1]
STANDARDS = REPO.parent / "shared" / "standards"


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
    before = list(created_databases)

    def make(files: dict[str, Any] | None = None, metastore_url: str | None = None, grants: bool = True) -> Workspace:
        root = tmp_path / f"mesh{len(opened)}"
        files = copy.deepcopy(files) if files is not None else base_files()
        if metastore_url is None and isinstance(files.get("mesh.yaml"), dict):
            tier_metastore(files["mesh.yaml"])
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
    for url in [u for u in created_databases if u not in before]:
        drop_database(url)


@pytest.fixture(scope="session", autouse=True)
def _drop_tier_databases() -> Iterator[None]:
    """Databases made for module-wide meshes (governed_demo) in the PostgreSQL tier go when the session ends."""
    yield
    for url in list(created_databases):
        drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def metastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The metastore URL of a test that runs once per backend: a SQLite file, then a fresh PostgreSQL database."""
    if METASTORE_TIER == "postgresql":
        pytest.skip("runs on SQLite and on PostgreSQL in the first pass already")
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)
