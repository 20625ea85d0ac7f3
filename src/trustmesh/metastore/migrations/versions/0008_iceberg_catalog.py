"""iceberg catalog: pyiceberg's SQL-catalog tables, created with the metastore's own schema

pyiceberg creates them on first use by checking, then creating; two builds starting at once on a
fresh metastore both saw them missing. Created here, under the migration lock, they always exist.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from pyiceberg.catalog.sql import SqlCatalogBaseTable

    SqlCatalogBaseTable.metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    pass  # the catalog's tables hold every published snapshot: never dropped by a downgrade
