"""Schema migrations (Alembic) for both stores, run by `migrate()` at start and by the migrate
command.

Revisions live in `versions/`; `env.py` runs them on the connection `migrate()` hands it, inside
the transaction `migrate()` holds, so no alembic.ini is needed and an upgrade is all or nothing:
- PostgreSQL: under an advisory lock; replicas that start together queue on the lock, the first
  one upgrades, the others find the schema at head and do nothing.
- SQLite: under the file's write lock (BEGIN IMMEDIATE), so processes sharing the file take turns
  the same way. A file made before migrations existed has no version yet: revision 0001 creates
  only what it lacks, and the next revisions bring it to head.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.errors import StoreUnavailable
from app.store.postgres_pool import explain, is_unavailable
from app.store.sqlite_writer import database_trouble
from app.store.url import parse_database_url

# pg_advisory_xact_lock key for schema changes: any fixed number no other user of the database
# takes; these are the bytes of "noti".
MIGRATION_LOCK = 0x6E6F7469
HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def head() -> str:
    """The newest revision: where `migrate()` brings a database."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


async def migrate(database_url: str, *, revision: str = "head", wait: float = 30.0) -> None:
    """Bring the database at `database_url` up to `revision`; safe to run from many processes
    at once. `wait`: seconds to wait for PostgreSQL to accept the connection, or for
    another process's write on the SQLite file. Raises StoreUnavailable, saying why, when the
    database cannot be reached or written."""
    url = parse_database_url(database_url)
    try:
        if url.backend == "sqlite":
            await asyncio.to_thread(_migrate_sqlite, url.sqlite_path, revision=revision, wait=wait)
        else:
            await _migrate_postgresql(url.postgres_dsn, revision=revision, wait=wait)
    except Exception as exc:
        trouble = next((c for c in _causes(exc) if is_unavailable(c) or database_trouble(c)), None)
        if trouble is None:
            raise
        reason = explain(trouble, timeout=wait) if url.backend == "postgresql" else trouble
        raise StoreUnavailable(f"cannot migrate the database of DATABASE_URL: {reason}") from exc


async def _migrate_postgresql(dsn: str, *, revision: str, wait: float) -> None:
    # SQLAlchemy only lends Alembic its dialect; the connection is asyncpg's own from the same
    # DSN, so the URL means exactly what it means to the store (sslmode and all).
    engine = create_async_engine(
        "postgresql+asyncpg://",
        async_creator=lambda: asyncpg.connect(dsn, timeout=wait),
        poolclass=NullPool,
    )
    try:
        async with engine.begin() as connection:
            # Held until this transaction commits: the whole upgrade is one critical section.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
            await connection.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


def _migrate_sqlite(path: Path, *, revision: str, wait: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def connect() -> sqlite3.Connection:
        # autocommit at the driver, so that the transaction is the one we begin below
        db = sqlite3.connect(path, isolation_level=None, timeout=wait)
        db.execute("PRAGMA journal_mode=WAL")  # persistent: the store finds the file in WAL
        return db

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "begin")
    def take_the_write_lock(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.begin() as connection:
            _upgrade(connection, revision)
    finally:
        engine.dispose()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: SQLAlchemy wraps the driver's errors (`orig`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
