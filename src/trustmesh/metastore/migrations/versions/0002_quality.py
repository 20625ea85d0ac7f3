"""quality results per check, quarantined candidates, a quality score per version

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tm_quality_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(length=400), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(length=400), nullable=False),
        sa.Column("name", sa.String(length=400), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("column", sa.String(length=200), nullable=True),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("dimension", sa.String(length=100), nullable=True),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("operator", sa.String(length=40), nullable=False),
        sa.Column("threshold", sa.JSON(), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("samples", sa.JSON(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tm_quality_results_dataset", "tm_quality_results", ["dataset"])
    op.create_index("ix_tm_quality_results_build_id", "tm_quality_results", ["build_id"])
    op.create_table(
        "tm_quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(length=400), nullable=False),
        sa.Column("build_id", sa.String(length=64), nullable=False),
        sa.Column("data_file", sa.String(length=1000), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tm_quarantine_dataset", "tm_quarantine", ["dataset"])
    with op.batch_alter_table("tm_dataset_versions") as batch:
        batch.add_column(sa.Column("quality_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("quality", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("tm_dataset_versions") as batch:
        batch.drop_column("quality")
        batch.drop_column("quality_score")
    op.drop_table("tm_quarantine")
    op.drop_table("tm_quality_results")
