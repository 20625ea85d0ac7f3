"""initial schema: catalog, versions, builds, search

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tm_builds',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('selector', sa.String(length=400), nullable=False),
    sa.Column('full', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('tm_domains',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('sector', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('glossary', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('tm_people',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=400), nullable=False),
    sa.Column('email', sa.String(length=400), nullable=True),
    sa.Column('domain', sa.String(length=200), nullable=True),
    sa.Column('clearance', sa.String(length=100), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('tm_products',
    sa.Column('address', sa.String(length=400), nullable=False),
    sa.Column('domain', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=40), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('description', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('team', sa.JSON(), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.Column('descriptor', sa.JSON(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=True),
    sa.Column('built_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('address')
    )
    with op.batch_alter_table('tm_products', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tm_products_domain'), ['domain'], unique=False)

    op.create_table('tm_roles',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('person_id', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=100), nullable=False),
    sa.Column('domain', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('person_id', 'role', 'domain')
    )
    with op.batch_alter_table('tm_roles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tm_roles_person_id'), ['person_id'], unique=False)

    op.create_table('tm_search_docs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('address', sa.String(length=600), nullable=False),
    sa.Column('dataset', sa.String(length=400), nullable=False),
    sa.Column('product', sa.String(length=400), nullable=False),
    sa.Column('domain', sa.String(length=200), nullable=False),
    sa.Column('sector', sa.String(length=200), nullable=False),
    sa.Column('product_kind', sa.String(length=40), nullable=False),
    sa.Column('classification', sa.String(length=100), nullable=True),
    sa.Column('sensitivity', sa.String(length=100), nullable=False),
    sa.Column('has_pii', sa.Boolean(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tm_search_docs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tm_search_docs_address'), ['address'], unique=False)
        batch_op.create_index(batch_op.f('ix_tm_search_docs_dataset'), ['dataset'], unique=False)
        batch_op.create_index(batch_op.f('ix_tm_search_docs_product'), ['product'], unique=False)

    op.create_table('tm_source_stamps',
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('mtime_ns', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('path')
    )
    op.create_table('tm_datasets',
    sa.Column('address', sa.String(length=400), nullable=False),
    sa.Column('product', sa.String(length=400), nullable=False),
    sa.Column('domain', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('contract', sa.JSON(), nullable=False),
    sa.Column('contract_version', sa.String(length=40), nullable=False),
    sa.Column('classification', sa.String(length=100), nullable=True),
    sa.Column('sensitivity', sa.String(length=100), nullable=False),
    sa.Column('has_pii', sa.Boolean(), nullable=False),
    sa.Column('iceberg_table', sa.String(length=600), nullable=False),
    sa.Column('current_version', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['product'], ['tm_products.address'], ),
    sa.PrimaryKeyConstraint('address')
    )
    with op.batch_alter_table('tm_datasets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tm_datasets_domain'), ['domain'], unique=False)
        batch_op.create_index(batch_op.f('ix_tm_datasets_product'), ['product'], unique=False)

    op.create_table('tm_product_builds',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('build_id', sa.String(length=64), nullable=False),
    sa.Column('product', sa.String(length=400), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('rows', sa.BigInteger(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['build_id'], ['tm_builds.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tm_product_builds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tm_product_builds_build_id'), ['build_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tm_product_builds_product'), ['product'], unique=False)

    op.create_table('tm_columns',
    sa.Column('dataset', sa.String(length=400), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('logical_type', sa.String(length=40), nullable=False),
    sa.Column('physical_type', sa.String(length=100), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('required', sa.Boolean(), nullable=False),
    sa.Column('primary_key', sa.Boolean(), nullable=False),
    sa.Column('unique', sa.Boolean(), nullable=False),
    sa.Column('classification', sa.String(length=100), nullable=True),
    sa.Column('sensitivity', sa.String(length=100), nullable=False),
    sa.Column('pii_type', sa.String(length=100), nullable=True),
    sa.Column('glossary_term', sa.String(length=200), nullable=True),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['dataset'], ['tm_datasets.address'], ),
    sa.PrimaryKeyConstraint('dataset', 'name')
    )
    op.create_table('tm_dataset_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('dataset', sa.String(length=400), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('snapshot_id', sa.BigInteger(), nullable=False),
    sa.Column('build_id', sa.String(length=64), nullable=False),
    sa.Column('row_count', sa.BigInteger(), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('contract_version', sa.String(length=40), nullable=False),
    sa.Column('columns', sa.JSON(), nullable=False),
    sa.Column('data_files', sa.JSON(), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['dataset'], ['tm_datasets.address'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dataset', 'version')
    )
    with op.batch_alter_table('tm_dataset_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tm_dataset_versions_dataset'), ['dataset'], unique=False)



    _create_search_index()


def _create_search_index() -> None:
    """Full-text search in the database's own engine: FTS5 on SQLite, a tsvector + GIN index on PostgreSQL."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE tm_search_fts USING fts5("
            "title, body, content='tm_search_docs', content_rowid='id', tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER tm_search_docs_ai AFTER INSERT ON tm_search_docs BEGIN "
            "INSERT INTO tm_search_fts(rowid, title, body) VALUES (new.id, new.title, new.body); END"
        )
        op.execute(
            "CREATE TRIGGER tm_search_docs_ad AFTER DELETE ON tm_search_docs BEGIN "
            "INSERT INTO tm_search_fts(tm_search_fts, rowid, title, body) VALUES ('delete', old.id, old.title, old.body); END"
        )
    elif dialect == "postgresql":
        op.execute(
            "ALTER TABLE tm_search_docs ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
            "setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', body), 'B')) STORED"
        )
        op.execute("CREATE INDEX ix_tm_search_docs_tsv ON tm_search_docs USING gin (tsv)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS tm_search_fts")
    with op.batch_alter_table('tm_dataset_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tm_dataset_versions_dataset'))

    op.drop_table('tm_dataset_versions')
    op.drop_table('tm_columns')
    with op.batch_alter_table('tm_product_builds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tm_product_builds_product'))
        batch_op.drop_index(batch_op.f('ix_tm_product_builds_build_id'))

    op.drop_table('tm_product_builds')
    with op.batch_alter_table('tm_datasets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tm_datasets_product'))
        batch_op.drop_index(batch_op.f('ix_tm_datasets_domain'))

    op.drop_table('tm_datasets')
    op.drop_table('tm_source_stamps')
    with op.batch_alter_table('tm_search_docs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tm_search_docs_product'))
        batch_op.drop_index(batch_op.f('ix_tm_search_docs_dataset'))
        batch_op.drop_index(batch_op.f('ix_tm_search_docs_address'))

    op.drop_table('tm_search_docs')
    with op.batch_alter_table('tm_roles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tm_roles_person_id'))

    op.drop_table('tm_roles')
    with op.batch_alter_table('tm_products', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tm_products_domain'))

    op.drop_table('tm_products')
    op.drop_table('tm_people')
    op.drop_table('tm_domains')
    op.drop_table('tm_builds')
