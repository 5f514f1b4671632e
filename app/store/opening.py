"""Opening the store that DATABASE_URL names, with its schema brought up to date first.

For now the SQLite file only (the store migrates its schema as it opens).
"""

from __future__ import annotations

from app.settings import Settings
from app.store.sqlite import Store


async def open_store(settings: Settings) -> Store:
    """The store, its schema at this version's (the database is created if missing)."""
    return Store(
        settings.database_path,
        synchronous=settings.sqlite_synchronous,
        busy_timeout=settings.database_busy_timeout,
    )


async def migrate(settings: Settings) -> None:
    """Bring the database's schema up to this version's, and nothing else."""
    store = await open_store(settings)
    store.close()
