"""PostgreSQL for the benchmark: a fresh database for each measurement, dropped after it, on
the server at BENCH_POSTGRES_URL (default: user postgres on 127.0.0.1:5432, trust auth), so no
measurement sees another's rows or a database left over from an earlier run."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from app.store.migrations import migrate

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin(statement: str) -> None:
    try:
        admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"cannot reach PostgreSQL at BENCH_POSTGRES_URL ({exc}); start it, point the"
            " variable at a server where we may create databases, or run with --no-postgres"
        ) from exc
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new database, migrated as a deployment's migrate step would (so the
    service measured loads no migration machinery); dropped on exit, with whatever
    connections are still open to it."""
    name = f"notifier_bench_{secrets.token_hex(6)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        asyncio.run(migrate(url))
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
