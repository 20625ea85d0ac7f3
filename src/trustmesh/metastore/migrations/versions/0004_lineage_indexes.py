"""lineage edges indexed by (dataset, column, version) for upstream walks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An upstream walk looks edges up by (dataset, column) and keeps the served version; with the version last,
    # every probe is exact on SQLite and PostgreSQL alike, however many versions a dataset has published.
    op.create_index("ix_tm_lineage_edges_column", "tm_lineage_edges", ["dataset", "column", "version"])


def downgrade() -> None:
    op.drop_index("ix_tm_lineage_edges_column", table_name="tm_lineage_edges")
