"""One SQLite connection, used from a worker thread so the event loop never waits on the disk.

Writes are grouped: those that arrive while a commit is under way share the next transaction,
each in its own savepoint, so one commit (one fsync) serves many callers and one caller's error
rolls back only its own work. A write returns once its transaction is committed; with WAL and
synchronous=FULL that means on disk.

Whatever goes wrong with the database itself (busy, locked, full, a damaged file, anything the
writer did not expect) reaches every caller as StoreUnavailable: no caller is left waiting, and
the next write starts afresh. A connection that saw the file damaged is reopened on next use.
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

# Errors that are the work's own fault (a constraint, a wrong statement, a value too big), not
# the database's: the group rolls back that work alone.
_WORK_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError)
# Codes after which the connection may keep a wrong picture of the file: start a new one.
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_INTERNAL")


def database_trouble(exc: BaseException) -> bool:
    """True when the database itself failed (busy, locked, full, damaged), not the work."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, _WORK_ERRORS)


def _lenient_text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _undecodable(exc: sqlite3.OperationalError) -> bool:
    """The sqlite3 module's error for stored text that is not UTF-8 (it carries no code)."""
    return str(exc).startswith("Could not decode to UTF-8")


class Database:
    def __init__(self, path: Path, *, synchronous: str, busy_timeout: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = self._open()
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        return db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection (in a worker thread); database trouble becomes
        StoreUnavailable: the caller should try again later."""
        with self._lock:
            try:
                db = self._connection()
                try:
                    return _rolled_back_on_error(db, work)
                except sqlite3.OperationalError as exc:
                    if not _undecodable(exc):
                        raise
                # Text that is not UTF-8 (written by another program) is read again with U+FFFD
                # for the bad bytes, rather than failing every query that meets it; only then:
                # decoding in Python costs a tenth of a claim's time.
                db.text_factory = _lenient_text
                try:
                    return _rolled_back_on_error(db, work)
                finally:
                    db.text_factory = str
            except Exception as exc:
                if not database_trouble(exc):
                    raise
                if str(getattr(exc, "sqlite_errorname", "")).startswith(_DAMAGE) and self._db:
                    self._db.close()
                    self._db = None
                raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` outside the grouped writes (autocommit: also for single small writes)."""
        return await asyncio.to_thread(self._run, work)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in a write transaction; return once it is committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        result: T = await future
        return result

    async def _write_pending(self) -> None:
        batch: list[tuple[Work, asyncio.Future[Any]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await self.read(partial(_commit_group, group=[w for w, _ in batch]))
                except Exception as exc:  # whatever it was, every waiter gets its answer
                    failure = exc if isinstance(exc, StoreUnavailable) else _unavailable(exc)
                    outcomes = [(False, failure)] * len(batch)
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            # Only reached with waiters left when this task itself is cancelled (shutdown).
            for _, future in [*batch, *self._pending]:
                if not future.done():
                    future.set_exception(StoreUnavailable("the database writer stopped"))


def _rolled_back_on_error(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    try:
        return work(db)
    finally:
        if db.in_transaction:
            db.rollback()


def _unavailable(exc: Exception) -> StoreUnavailable:
    failure = StoreUnavailable(f"database unavailable: {exc!r}")
    failure.__cause__ = exc
    return failure


def _commit_group(db: sqlite3.Connection, group: list[Work]) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    for work in group:
        db.execute("SAVEPOINT work")
        try:
            outcomes.append((True, work(db)))
        except Exception as exc:
            if database_trouble(exc):
                raise  # the database itself is in trouble: the whole group fails
            db.execute("ROLLBACK TO work")
            outcomes.append((False, exc))
        db.execute("RELEASE work")
    db.execute("COMMIT")
    return outcomes
