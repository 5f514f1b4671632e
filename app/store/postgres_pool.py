"""A pool of asyncpg connections whose every use ends within DATABASE_TIMEOUT.

Each use takes a connection, runs one piece of work and gives the connection back, all under one
deadline. When the server cannot be reached, refuses us, shuts down or says nothing, the caller
gets StoreUnavailable (HTTP 503, try again) within the deadline, never a hang. A connection that
failed or was cut off mid-command is terminated rather than reset (a reset would wait on the same
dead server); the pool opens a fresh one on the next use, so the store recovers by itself once the
server is back, without being recreated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from asyncpg import exceptions as pg
from asyncpg.pool import PoolConnectionProxy

from app.errors import StoreUnavailable

T = TypeVar("T")
Connection = PoolConnectionProxy

# Errors that say "the database cannot serve us now" (try again later), as opposed to a fault
# of the statement itself: refused or lost connections, server starting up or shutting down
# (class 57), out of connections or disk (class 53), a read-only standby after a failover,
# a serialization failure or deadlock (class 40), and a database or schema not there yet.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    pg.PostgresConnectionError,
    pg.OperatorInterventionError,
    pg.InsufficientResourcesError,
    pg.TransactionRollbackError,
    pg.ReadOnlySQLTransactionError,
    pg.InvalidCatalogNameError,
    pg.InvalidAuthorizationSpecificationError,
    pg.UndefinedTableError,
    pg.InterfaceError,
)
# InterfaceError subclasses that mean we sent something wrong: a bug to see, not an outage.
_OUR_FAULT = (pg.DataError, pg.ClientConfigurationError)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, _OUR_FAULT)


def explain(exc: BaseException, *, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"PostgreSQL did not answer within DATABASE_TIMEOUT ({timeout:g} s)"
    if isinstance(exc, pg.UndefinedTableError):
        return f"the PostgreSQL schema is missing ({exc}): run the migrations"
    return f"PostgreSQL unavailable: {type(exc).__name__}: {exc}"


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """The store leaves no session state behind (no SET, LISTEN, advisory lock or cursor; an
    open transaction is rolled back by the pool before this), so a connection goes back to
    the pool without asyncpg's default reset, a round trip on every call."""


class PostgresPool:
    def __init__(self, pool: asyncpg.Pool, *, timeout: float) -> None:
        self._pool = pool
        self.timeout = timeout

    @classmethod
    async def open(cls, dsn: str, *, database_timeout: float = 5.0, size: int = 10) -> PostgresPool:
        """A pool that connects on first use: opening it never fails, even while the server
        is down (the first call then says so)."""
        timeout = database_timeout
        pool = asyncpg.create_pool(
            dsn,
            min_size=0,  # no background reconnection loop; a connection is opened on demand
            max_size=size,
            timeout=timeout,  # connection establishment, within our own deadline anyway
            command_timeout=None,  # the deadline of run() covers every command
            reset=_nothing_to_reset,
            server_settings={
                "application_name": "notifier",
                # the server gives up too, so a statement we stopped waiting for frees its locks
                "statement_timeout": str(int(timeout * 1000)),
                "idle_in_transaction_session_timeout": str(int(timeout * 2000)),
            },
        )
        await pool  # creates the (empty) holders; connects nothing with min_size=0
        return cls(pool, timeout=timeout)

    async def run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection; StoreUnavailable if the database cannot serve it
        within the deadline."""
        try:
            async with asyncio.timeout(self.timeout):
                connection: Connection = await self._pool.acquire()
                try:
                    return await work(connection)
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError) or is_unavailable(exc):
                        connection.terminate()
                    raise
                finally:
                    await self._pool.release(connection, timeout=self.timeout)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) or not is_unavailable(exc):
                raise
            raise StoreUnavailable(explain(exc, timeout=self.timeout)) from exc

    async def close(self) -> None:
        """Close the connections; those still busy after the deadline are cut."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()
