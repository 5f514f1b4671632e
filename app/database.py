"""One SQLite connection, used from a worker thread so the event loop never waits on the disk.

Writes are grouped: those that arrive while a commit is under way share the next transaction,
each in its own savepoint, so one commit (one fsync) serves many callers and one caller's error
rolls back only its own work. A write returns once its transaction is committed; with WAL and
synchronous=FULL that means on disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from app.errors import StoreUnavailable

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]


class Database:
    def __init__(self, path: Path, *, synchronous: str, busy_timeout: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._lock = threading.Lock()
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    def setup(self, schema: str, migrate: Callable[[sqlite3.Connection], None]) -> None:
        with self._lock:
            self._db.executescript(schema)
            migrate(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                try:
                    return work(self._db)
                except sqlite3.OperationalError as exc:
                    # busy, locked, full, read-only: the caller should try again later
                    if self._db.in_transaction:
                        self._db.rollback()
                    raise StoreUnavailable(f"database unavailable: {exc}") from exc

        return await asyncio.to_thread(locked)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in a write transaction; return once it is committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        result: T = await future
        return result

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self.read(partial(_commit_group, group=[w for w, _ in batch]))
            except StoreUnavailable as exc:
                outcomes = [(False, exc)] * len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)


def _commit_group(db: sqlite3.Connection, group: list[Work]) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for work in group:
            db.execute("SAVEPOINT work")
            try:
                outcomes.append((True, work(db)))
            except sqlite3.OperationalError:
                raise  # the database itself is in trouble: the whole group fails
            except Exception as exc:
                db.execute("ROLLBACK TO work")
                outcomes.append((False, exc))
            db.execute("RELEASE work")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.rollback()
        raise
    return outcomes
