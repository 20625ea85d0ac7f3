"""The metastore: catalog, versions, builds and search in SQLite (default) or PostgreSQL, migrated by Alembic."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from trustmesh.errors import MetastoreUnavailable

__all__ = ["HEAD_REVISION", "Metastore", "serialize"]

HEAD_REVISION = "0009"  # the newest migration; a test keeps it equal to Alembic's head


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


class Metastore:
    """A connection to the metastore database; `Metastore.open` also migrates it to the current schema."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Metastore:
        """Connect (creating a SQLite file's folder) and bring the schema up to date."""
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise MetastoreUnavailable(
                f"metastore URL {url!r} is not a database URL ({exc}) — fix: use sqlite:///path/metastore.db "
                "or postgresql+psycopg://user@host:5432/db"
            ) from exc
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        elif parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
            kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            engine = create_engine(parsed, pool_pre_ping=True, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise MetastoreUnavailable(
                f"no database driver for {_redact(url)} ({exc}) — fix: pip install 'trustmesh[postgres]' for PostgreSQL"
            ) from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise MetastoreUnavailable(
                f"cannot connect to the metastore at {_redact(url)}: {reason} — fix: start the database, "
                "or correct platform.metastore in mesh.yaml / the TRUSTMESH_METASTORE_URL variable"
            ) from exc
        store = cls(parsed.render_as_string(hide_password=False), engine)
        if migrate:
            store.upgrade()
        return store

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def revision(self) -> str | None:
        """The schema revision the database is at (None when it has never been migrated)."""
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except (OperationalError, ProgrammingError):
                return None

    def upgrade(self, revision: str = "head") -> None:
        """Run Alembic migrations up to `revision` on this database (a no-op, without Alembic, when current)."""
        if revision == "head" and self.revision() == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(resources.files(__package__).joinpath("migrations")))
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # One migrator at a time when several workers start together.
                conn.execute(text("SELECT pg_advisory_xact_lock(7411020211)"))
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends normally, rolled back on any error."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            if not _connection_lost(exc):
                raise
            raise MetastoreUnavailable(
                f"lost the metastore at {_redact(self.url)}: {str(exc.orig).strip().splitlines()[0]} — fix: check "
                "that the database is running; nothing of the interrupted change was kept") from exc

    def dispose(self) -> None:
        self.engine.dispose()


def serialize(session: Session, name: str) -> None:
    """Hold a lock named `name` until `session` commits: writers of the same rows take turns.

    PostgreSQL gets a transaction-level advisory lock (READ COMMITTED would otherwise let two writers
    both see a row missing and both insert it); SQLite already lets only one writer in at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _connection_lost(exc: OperationalError) -> bool:
    """A dropped or refused connection, as opposed to an error in the statement itself."""
    return bool(exc.connection_invalidated) or "connect" in str(exc.orig).lower() or "server closed" in str(exc.orig).lower()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
