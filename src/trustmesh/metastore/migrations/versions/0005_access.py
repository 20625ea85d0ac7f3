"""access requests, decisions and grants; the audit chain and its head; API tokens

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tm_access_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("requester", sa.String(length=200), nullable=False),
        sa.Column("principal", sa.String(length=400), nullable=False),
        sa.Column("principal_kind", sa.String(length=20), nullable=False),
        sa.Column("dataset", sa.String(length=400), nullable=False),
        sa.Column("domain", sa.String(length=200), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("unmask", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("purpose_category", sa.String(length=100), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("levels", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _at("created_at"),
        _at("expires_at"),
        _at("decided_at", nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("requester", "principal", "dataset", "domain", "state"):
        op.create_index(f"ix_tm_access_requests_{column}", "tm_access_requests", [column])
    op.create_table(
        "tm_access_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("tm_access_requests.id"), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("approver", sa.String(length=200), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        _at("decided_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "level"),
    )
    op.create_index("ix_tm_access_decisions_request_id", "tm_access_decisions", ["request_id"])
    op.create_table(
        "tm_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("tm_access_requests.id"), nullable=True),
        sa.Column("principal", sa.String(length=400), nullable=False),
        sa.Column("principal_kind", sa.String(length=20), nullable=False),
        sa.Column("dataset", sa.String(length=400), nullable=False),
        sa.Column("domain", sa.String(length=200), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("unmask", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("purpose_category", sa.String(length=100), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        _at("granted_at"),
        _at("expires_at"),
        sa.Column("state", sa.String(length=20), nullable=False),
        _at("ended_at", nullable=True),
        sa.Column("revoked_by", sa.String(length=200), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id"),
    )
    for column in ("principal", "dataset", "expires_at", "state"):
        op.create_index(f"ix_tm_grants_{column}", "tm_grants", [column])
    op.create_table(
        "tm_audit",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        _at("at"),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("actor", sa.String(length=400), nullable=False),
        sa.Column("subject", sa.String(length=600), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    for column in ("at", "type", "actor", "subject"):
        op.create_index(f"ix_tm_audit_{column}", "tm_audit", [column])
    head = op.create_table(
        "tm_audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    op.create_table(
        "tm_api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _at("created_at"),
        _at("expires_at", nullable=True),
        _at("revoked_at", nullable=True),
        _at("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash"),
    )
    op.create_index("ix_tm_api_tokens_principal", "tm_api_tokens", ["principal"])


def downgrade() -> None:
    for table in ("tm_api_tokens", "tm_audit_head", "tm_audit", "tm_grants", "tm_access_decisions",
                  "tm_access_requests"):
        op.drop_table(table)
