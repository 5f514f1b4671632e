"""Schema migrations (Alembic) for both stores, run by `migrate()` at start and by the migrate
command.

Revisions live in `versions/`, named `NNNN_what.py` with revision id `NNNN`; an upgrade is all or
nothing, in one transaction (see `upgrade`):
- PostgreSQL: under an advisory lock; replicas that start together queue on the lock, the first
  one upgrades, the others find the schema at head and do nothing.
- SQLite: under the file's write lock (BEGIN IMMEDIATE), so processes sharing the file take turns
  the same way. A file made before migrations existed has no version yet: revision 0001 creates
  only what it lacks, and the next revisions bring it to head.

A database already at head (every start but the first after an upgrade) is recognised by reading
its version, without loading Alembic at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from app.errors import StoreUnavailable
from app.store.sqlite_writer import database_trouble
from app.store.url import parse_database_url

VERSIONS = Path(__file__).resolve().parent / "versions"


def head() -> str:
    """The newest revision, where `migrate()` brings a database: the highest `NNNN_` prefix
    in `versions/` (a test checks that Alembic agrees)."""
    return max(p.name.split("_", 1)[0] for p in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))


async def migrate(database_url: str, *, revision: str = "head", wait: float = 30.0) -> None:
    """Bring the database at `database_url` up to `revision`; safe to run from many processes
    at once. `wait`: seconds to wait for PostgreSQL to accept the connection, or for
    another process's write on the SQLite file. Raises StoreUnavailable, saying why, when the
    database cannot be reached or written."""
    url = parse_database_url(database_url)
    target = head() if revision == "head" else revision
    try:
        if url.backend == "sqlite":
            await asyncio.to_thread(_migrate_sqlite, url.sqlite_path, target=target, wait=wait)
        else:
            await _migrate_postgresql(url.postgres_dsn, target=target, wait=wait)
    except Exception as exc:
        reason = _unavailable(exc, backend=url.backend, wait=wait)
        if reason is None:
            raise
        raise StoreUnavailable(f"cannot migrate the database of DATABASE_URL: {reason}") from exc


def _migrate_sqlite(path: Path, *, target: str, wait: float) -> None:
    if _sqlite_version(path, wait=wait) == target:
        return
    from app.store.migrations.upgrade import upgrade_sqlite

    upgrade_sqlite(path, revision=target, wait=wait)


def _sqlite_version(path: Path, *, wait: float) -> str | None:
    """The file's revision; None if it has none (new, or made before migrations)."""
    if not path.exists():
        return None
    db = sqlite3.connect(path, timeout=wait)
    try:
        with contextlib.suppress(sqlite3.OperationalError):  # no version table
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            return None if row is None else str(row[0])
        return None
    finally:
        db.close()


async def _migrate_postgresql(dsn: str, *, target: str, wait: float) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn, timeout=wait)
    try:
        with contextlib.suppress(asyncpg.UndefinedTableError):  # a new database
            if await connection.fetchval("SELECT version_num FROM alembic_version") == target:
                return
    finally:
        await connection.close(timeout=wait)
    from app.store.migrations.upgrade import upgrade_postgresql

    await upgrade_postgresql(dsn, revision=target, wait=wait)


def _unavailable(exc: Exception, *, backend: str, wait: float) -> str | None:
    """Why the database could not be migrated now, if that is what `exc` says; None for any
    other error (a fault of ours)."""
    if backend == "sqlite":
        found = next(
            (c for c in _causes(exc) if isinstance(c, OSError) or database_trouble(c)), None
        )
        return None if found is None else str(found)
    from app.store.postgres_pool import explain, is_unavailable

    found = next((c for c in _causes(exc) if is_unavailable(c)), None)
    return None if found is None else explain(found, timeout=wait)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: SQLAlchemy wraps the driver's errors (`orig`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) or current.__cause__
