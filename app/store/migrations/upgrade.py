"""Runs Alembic on a database, in one transaction that holds the database's migration lock.

Imported only when a database is behind: Alembic and SQLAlchemy weigh about 25 MB and some
50,000 objects that every later garbage collection would walk, for nothing once the schema is
at head. `env.py` runs the revisions on the connection handed over here, so no alembic.ini is
needed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

# pg_advisory_xact_lock key for schema changes: any fixed number no other user of the database
# takes; these are the bytes of "noti".
MIGRATION_LOCK = 0x6E6F7469
HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def alembic_head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


async def upgrade_postgresql(dsn: str, *, revision: str, wait: float) -> None:
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


def upgrade_sqlite(path: Path, *, revision: str, wait: float) -> None:
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


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
