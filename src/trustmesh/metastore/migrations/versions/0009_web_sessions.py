"""web sessions: the server-side record of each signed-in browser (the cookie holds only a random id)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tm_web_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("credential", sa.String(length=20), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _at("created_at"),
        _at("expires_at"),
        _at("ended_at", nullable=True),
        sa.Column("ended_reason", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash"),
    )
    op.create_index("ix_tm_web_sessions_principal", "tm_web_sessions", ["principal"])
    op.create_index("ix_tm_web_sessions_token_id", "tm_web_sessions", ["token_id"])
    op.create_index("ix_tm_web_sessions_expires_at", "tm_web_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("tm_web_sessions")
