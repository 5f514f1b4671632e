"""Schema migrations (Alembic), run by `migrate()` at start and by the migrate command.

Revisions live in `versions/`; `env.py` runs them on the connection `migrate()` hands it, so no
alembic.ini is needed. On PostgreSQL the upgrade runs in one transaction under an advisory lock:
replicas that start together queue on the lock, the first one upgrades, the others find the
schema at head and do nothing.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.store.url import parse_database_url

# pg_advisory_xact_lock key for schema changes: any fixed number no other user of the database
# takes; these are the bytes of "noti".
MIGRATION_LOCK = 0x6E6F7469
HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


async def migrate(database_url: str, *, revision: str = "head") -> None:
    """Bring the database at `database_url` up to `revision`; safe to run from many processes
    at once."""
    url = parse_database_url(database_url)
    if url.backend != "postgresql":
        raise NotImplementedError("Alembic migrations for SQLite are not wired up yet")
    dsn = url.postgres_dsn
    # SQLAlchemy only lends Alembic its dialect; the connection is asyncpg's own from the same
    # DSN, so the URL means exactly what it means to the store (sslmode and all).
    engine = create_async_engine(
        "postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(dsn), poolclass=NullPool
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


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
