"""Which schema revision a database is at, read without changing anything.

For the commands that only read (`notifier health`): they must not migrate, nor take the
migration lock, nor create a database file or tables where there were none. A database that is
not at this version's head is reported, naming what to run.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from app.errors import SchemaNotCurrent, StoreUnavailable
from app.store.migrations import head
from app.store.url import parse_database_url

# Alembic's bookkeeping table (its default name; env.py keeps it)
VERSION_TABLE = "alembic_version"


async def schema_revision(database_url: str, *, wait: float) -> str | None:
    """The revision the database is at; None when it has no schema (or, for SQLite, no file).
    StoreUnavailable, naming DATABASE_URL, when it cannot be reached within `wait` seconds."""
    url = parse_database_url(database_url)
    if url.backend == "sqlite":
        return await asyncio.to_thread(_sqlite_revision, url.sqlite_path, wait=wait)
    # imported here: a SQLite process need not carry asyncpg (memory, and the garbage
    # collector's walks over its objects)
    import asyncpg

    from app.store.postgres_pool import explain, is_unavailable

    try:
        connection = await asyncpg.connect(url.postgres_dsn, timeout=wait)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise StoreUnavailable(
            f"cannot reach the database of DATABASE_URL: {explain(exc, timeout=wait)}"
        ) from exc
    try:
        revision: str | None = await connection.fetchval(
            f"SELECT version_num FROM {VERSION_TABLE}", timeout=wait
        )
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await connection.close()
    return revision


def _sqlite_revision(path: Path, *, wait: float) -> str | None:
    if not path.exists():
        return None  # and it stays so: opening read-only never creates the file
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=wait)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot read the SQLite file of DATABASE_URL: {exc}") from exc
    try:
        row = db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise StoreUnavailable(f"cannot read the SQLite file of DATABASE_URL: {exc}") from exc
    finally:
        db.close()
    return None if row is None else str(row[0])


async def check_schema(database_url: str, *, wait: float) -> None:
    """Return when the database is at this version's head; SchemaNotCurrent if not."""
    at, wanted = await schema_revision(database_url, wait=wait), head()
    if at == wanted:
        return
    if at is None:
        problem = "has no schema yet"
    else:
        problem = f"is at schema revision {at}, this version needs {wanted}"
    raise SchemaNotCurrent(
        f"the database of DATABASE_URL {problem}: run `notifier migrate` (or start the API or"
        " a worker, which migrate at start)"
    )
