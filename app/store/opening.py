"""Opens the store DATABASE_URL names, its schema migrated to head first.

Every process role opens its store here, so each one migrates at start: safe when several start
at once (see `migrations`). A database that cannot be reached at start stops the start with a
message that says so, rather than serving 503s from a process that never had a schema to check.
Commands that only read (`notifier health`) open with `open_store_as_is`, which never migrates.
"""

from __future__ import annotations

from app.settings import Settings
from app.store import migrations
from app.store.protocol import NotificationStore
from app.store.schema import check_schema
from app.store.sqlite import SqliteStore
from app.store.url import parse_database_url


async def open_store(settings: Settings) -> NotificationStore:
    """The store of DATABASE_URL, at head; StoreUnavailable if the database cannot be reached
    (or, for SQLite, written) now. The PostgreSQL store's calls end within DATABASE_TIMEOUT;
    start its wake-ups with `store.listen(worker.wake)`."""
    await migrate(settings)
    return await _open(settings)


async def open_store_as_is(settings: Settings) -> NotificationStore:
    """The store of DATABASE_URL without migrating it (no migration lock, nothing created):
    SchemaNotCurrent, naming what to run, unless its schema is at head."""
    await check_schema(settings.database_url, wait=_wait(settings))
    return await _open(settings)


async def _open(settings: Settings) -> NotificationStore:
    url = parse_database_url(settings.database_url)
    if url.backend == "sqlite":
        return SqliteStore(
            url.sqlite_path,
            synchronous=settings.sqlite_synchronous,
            busy_timeout=settings.database_busy_timeout,
        )
    # imported here: asyncpg alone weighs 15 MB that a SQLite process does not need
    from app.store.postgres import PostgresStore

    return await PostgresStore.open(url.postgres_dsn, database_timeout=settings.database_timeout)


async def migrate(settings: Settings) -> None:
    """Bring the schema of DATABASE_URL up to head (the migrate command; `open_store` does
    it too); StoreUnavailable, naming DATABASE_URL, if the database cannot be reached."""
    await migrations.migrate(settings.database_url, wait=_wait(settings))


def _wait(settings: Settings) -> float:
    if parse_database_url(settings.database_url).backend == "sqlite":
        # another process migrating the same file holds its write lock for milliseconds
        return max(settings.database_busy_timeout, 5.0)
    return settings.database_timeout
