"""The metastore's tables: domains, people, products, datasets, columns, versions, builds, search."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always returned timezone-aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the metastore; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class DomainRow(Base):
    __tablename__ = "tm_domains"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    sector: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    glossary: Mapped[list[Any]] = mapped_column(default=list)


class PersonRow(Base):
    __tablename__ = "tm_people"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(400))
    email: Mapped[str | None] = mapped_column(String(400))
    domain: Mapped[str | None] = mapped_column(String(200))
    clearance: Mapped[str | None] = mapped_column(String(100))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RoleRow(Base):
    __tablename__ = "tm_roles"
    __table_args__ = (UniqueConstraint("person_id", "role", "domain"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person_id: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str | None] = mapped_column(String(200))


class ProductRow(Base):
    __tablename__ = "tm_products"
    address: Mapped[str] = mapped_column(String(400), primary_key=True)
    domain: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    tier: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(40), default="")
    description: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    team: Mapped[list[Any]] = mapped_column(default=list)
    inputs: Mapped[list[Any]] = mapped_column(default=list)
    descriptor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    built_at: Mapped[datetime | None] = mapped_column()


class DatasetRow(Base):
    __tablename__ = "tm_datasets"
    address: Mapped[str] = mapped_column(String(400), primary_key=True)
    product: Mapped[str] = mapped_column(String(400), ForeignKey("tm_products.address"), index=True)
    domain: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    contract: Mapped[dict[str, Any]] = mapped_column(default=dict)
    contract_version: Mapped[str] = mapped_column(String(40), default="")
    classification: Mapped[str | None] = mapped_column(String(100))
    sensitivity: Mapped[str] = mapped_column(String(100), default="non-sensitive")
    has_pii: Mapped[bool] = mapped_column(Boolean, default=False)
    iceberg_table: Mapped[str] = mapped_column(String(600))
    current_version: Mapped[int | None] = mapped_column(Integer)


class ColumnRow(Base):
    __tablename__ = "tm_columns"
    dataset: Mapped[str] = mapped_column(String(400), ForeignKey("tm_datasets.address"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    logical_type: Mapped[str] = mapped_column(String(40))
    physical_type: Mapped[str | None] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    primary_key: Mapped[bool] = mapped_column(Boolean, default=False)
    unique: Mapped[bool] = mapped_column(Boolean, default=False)
    classification: Mapped[str | None] = mapped_column(String(100))
    sensitivity: Mapped[str] = mapped_column(String(100), default="non-sensitive")
    pii_type: Mapped[str | None] = mapped_column(String(100))
    glossary_term: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[Any]] = mapped_column(default=list)


class VersionRow(Base):
    __tablename__ = "tm_dataset_versions"
    __table_args__ = (UniqueConstraint("dataset", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(400), ForeignKey("tm_datasets.address"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    snapshot_id: Mapped[int] = mapped_column(BigInteger)
    build_id: Mapped[str] = mapped_column(String(64))
    row_count: Mapped[int] = mapped_column(BigInteger)
    published_at: Mapped[datetime] = mapped_column()
    contract_version: Mapped[str] = mapped_column(String(40), default="")
    columns: Mapped[list[Any]] = mapped_column(default=list)
    data_files: Mapped[list[Any]] = mapped_column(default=list)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quality_score: Mapped[float | None] = mapped_column(Float)
    quality: Mapped[dict[str, Any]] = mapped_column(default=dict)


class BuildRow(Base):
    __tablename__ = "tm_builds"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(20))
    selector: Mapped[str] = mapped_column(String(400), default="")
    full: Mapped[bool] = mapped_column(Boolean, default=False)


class ProductBuildRow(Base):
    __tablename__ = "tm_product_builds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(String(64), ForeignKey("tm_builds.id"), index=True)
    product: Mapped[str] = mapped_column(String(400), index=True)
    status: Mapped[str] = mapped_column(String(20))
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    finished_at: Mapped[datetime] = mapped_column()


class SourceStampRow(Base):
    __tablename__ = "tm_source_stamps"
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class SearchDocRow(Base):
    __tablename__ = "tm_search_docs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(600), index=True)
    dataset: Mapped[str] = mapped_column(String(400), index=True)
    product: Mapped[str] = mapped_column(String(400), index=True)
    domain: Mapped[str] = mapped_column(String(200))
    sector: Mapped[str] = mapped_column(String(200))
    product_kind: Mapped[str] = mapped_column(String(40))
    classification: Mapped[str | None] = mapped_column(String(100))
    sensitivity: Mapped[str] = mapped_column(String(100))
    has_pii: Mapped[bool] = mapped_column(Boolean)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)


class QualityResultRow(Base):
    """One check of one build of a dataset: its metric, threshold and verdict, with masked samples."""

    __tablename__ = "tm_quality_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(400), index=True)
    build_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    rule: Mapped[str] = mapped_column(String(400))
    name: Mapped[str] = mapped_column(String(400))
    source: Mapped[str] = mapped_column(String(200))
    column: Mapped[str | None] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(100))
    dimension: Mapped[str | None] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(20))
    operator: Mapped[str] = mapped_column(String(40))
    threshold: Mapped[list[Any]] = mapped_column(default=list)
    unit: Mapped[str] = mapped_column(String(20))
    value: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    samples: Mapped[list[Any]] = mapped_column(default=list)
    checked_at: Mapped[datetime] = mapped_column()


class QuarantineRow(Base):
    """A candidate that failed an error-severity check: kept for inspection, never served."""

    __tablename__ = "tm_quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(400), index=True)
    build_id: Mapped[str] = mapped_column(String(64))
    data_file: Mapped[str] = mapped_column(String(1000))
    rows: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()


class LineageEdgeRow(Base):
    """One column-level edge of a published version's lineage: source column → output column, and how."""

    __tablename__ = "tm_lineage_edges"
    __table_args__ = (
        Index("ix_tm_lineage_edges_target", "dataset", "version", "column"),
        Index("ix_tm_lineage_edges_source", "source_dataset", "source_column"),
        Index("ix_tm_lineage_edges_column", "dataset", "column", "version"),  # upstream walks (migration 0004)
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(400))
    version: Mapped[int] = mapped_column(Integer)
    column: Mapped[str] = mapped_column(String(200))
    source_dataset: Mapped[str] = mapped_column(String(600))
    source_column: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))
    subtype: Mapped[str] = mapped_column(String(40))
    masking: Mapped[bool] = mapped_column(Boolean, default=False)


class FindingRow(Base):
    """A lineage or privacy finding on a dataset, from the build that found it; governance acts on these."""

    __tablename__ = "tm_findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset: Mapped[str] = mapped_column(String(400), index=True)
    kind: Mapped[str] = mapped_column(String(60))
    severity: Mapped[str] = mapped_column(String(20))
    column: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    build_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column()


class AccessRequestRow(Base):
    """A request for a grant: who asks, for whom, which dataset and columns, why, for how long (migration 0005)."""

    __tablename__ = "tm_access_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    requester: Mapped[str] = mapped_column(String(200), index=True)
    principal: Mapped[str] = mapped_column(String(400), index=True)
    principal_kind: Mapped[str] = mapped_column(String(20))
    dataset: Mapped[str] = mapped_column(String(400), index=True)
    domain: Mapped[str] = mapped_column(String(200), index=True)
    columns: Mapped[list[Any] | None] = mapped_column(JSON)  # None: every column
    unmask: Mapped[list[Any]] = mapped_column(default=list)
    row_filter: Mapped[str | None] = mapped_column(Text)  # only rows matching this predicate (migration 0006)
    purpose: Mapped[str] = mapped_column(Text)
    purpose_category: Mapped[str] = mapped_column(String(100))
    days: Mapped[int] = mapped_column(Integer)
    levels: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), index=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # bumped by every change: a stale writer changes nothing
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()  # a request still pending then expires
    decided_at: Mapped[datetime | None] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    grant_id: Mapped[int | None] = mapped_column(Integer)


class AccessDecisionRow(Base):
    """One approver's decision at one level of a request; one decision per level."""

    __tablename__ = "tm_access_decisions"
    __table_args__ = (UniqueConstraint("request_id", "level"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(Integer, ForeignKey("tm_access_requests.id"), index=True)
    level: Mapped[int] = mapped_column(Integer)
    approver: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(20))  # approve | reject
    note: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column()


class GrantRow(Base):
    """What a principal may read of a dataset, why and until when; made only by an approved request."""

    __tablename__ = "tm_grants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("tm_access_requests.id"), unique=True)
    principal: Mapped[str] = mapped_column(String(400), index=True)
    principal_kind: Mapped[str] = mapped_column(String(20))
    dataset: Mapped[str] = mapped_column(String(400), index=True)
    domain: Mapped[str] = mapped_column(String(200))
    columns: Mapped[list[Any] | None] = mapped_column(JSON)
    unmask: Mapped[list[Any]] = mapped_column(default=list)
    row_filter: Mapped[str | None] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    purpose_category: Mapped[str] = mapped_column(String(100))
    approvers: Mapped[list[Any]] = mapped_column(default=list)
    granted_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column(index=True)
    state: Mapped[str] = mapped_column(String(20), index=True)  # active | expired | revoked
    ended_at: Mapped[datetime | None] = mapped_column()
    revoked_by: Mapped[str | None] = mapped_column(String(200))
    revoke_reason: Mapped[str] = mapped_column(Text, default="")


class AuditRow(Base):
    """One entry of the append-only audit chain: each carries the hash of the one before it."""

    __tablename__ = "tm_audit"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(index=True)
    type: Mapped[str] = mapped_column(String(100), index=True)
    actor: Mapped[str] = mapped_column(String(400), index=True)
    subject: Mapped[str] = mapped_column(String(600), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The chain's newest sequence number and hash, one row; appenders queue on it, so the chain never forks."""

    __tablename__ = "tm_audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class ApiTokenRow(Base):
    """An API token of a person; only its SHA-256 is kept, so the metastore cannot give tokens away."""

    __tablename__ = "tm_api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class WebSessionRow(Base):
    """A signed-in browser: the cookie holds a random id, this row only its SHA-256, the person and the credential
    the session was started with (an API token's row, or an OIDC ID token's hash), so ending either ends it."""

    __tablename__ = "tm_web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    principal: Mapped[str] = mapped_column(String(200), index=True)
    credential: Mapped[str] = mapped_column(String(20))  # api-token | oidc
    token_id: Mapped[int | None] = mapped_column(Integer, index=True)  # tm_api_tokens.id for an API token
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None] = mapped_column()
    ended_reason: Mapped[str] = mapped_column(String(200), default="")


class PolicyRow(Base):
    """A policy as last applied: its version and content, to tell what changed (migration 0007)."""

    __tablename__ = "tm_policies"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(20))
    owner: Mapped[str | None] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(20))
    content: Mapped[dict[str, Any]] = mapped_column(default=dict)
    file: Mapped[str] = mapped_column(String(600), default="")
    applied_at: Mapped[datetime] = mapped_column()


class PolicyRunRow(Base):
    """One evaluation of the policies over products: why it ran, what it found."""

    __tablename__ = "tm_policy_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trigger: Mapped[str] = mapped_column(String(40))  # check | build | apply
    actor: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column()
    policies: Mapped[dict[str, Any]] = mapped_column(default=dict)  # id → version
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ProductStatusRow(Base):
    """A product's current governance status and the findings behind it."""

    __tablename__ = "tm_product_status"
    product: Mapped[str] = mapped_column(String(400), primary_key=True)
    status: Mapped[str] = mapped_column(String(40), index=True)
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    deadline: Mapped[str | None] = mapped_column(String(40))
    findings: Mapped[list[Any]] = mapped_column(default=list)
    policies: Mapped[dict[str, Any]] = mapped_column(default=dict)
    run_id: Mapped[int] = mapped_column(Integer)
    evaluated_at: Mapped[datetime] = mapped_column()


class StatusHistoryRow(Base):
    """Every evaluation of every product, kept: compliance over time."""

    __tablename__ = "tm_status_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product: Mapped[str] = mapped_column(String(400), index=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(40))
    failing: Mapped[list[Any]] = mapped_column(default=list)  # policy ids failed
    evaluated_at: Mapped[datetime] = mapped_column()
