"""Group commit for the PostgreSQL store's inserts.

Each commit waits for the server to flush its WAL to disk. With one commit per accepted request,
a busy API spends most of its database time waiting for flushes. Inserts that arrive while a
commit is under way wait and go together in the next transaction: one flush for many 202s. Each
caller still gets its answer only once its own row is committed. This is what the SQLite store's
writer does too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from app.errors import StoreUnavailable
from app.store.postgres_pool import PostgresPool
from app.store.postgres_rows import INSERT, insert_values
from app.store.records import NewNotification


class InsertGroup:
    def __init__(self, pool: PostgresPool) -> None:
        self._pool = pool
        self._pending: list[tuple[NewNotification, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, new: NewNotification) -> None:
        """Return once `new` is committed; StoreUnavailable if it could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((new, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        await future

    async def _write_pending(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await self._commit([new for new, _ in group])
            except Exception as exc:
                if len(group) > 1 and not isinstance(exc, StoreUnavailable):
                    # a row the database refuses must not fail the others: one at a time
                    await self._one_by_one(group)
                    continue
                _answer(group, exc)
            except BaseException:  # cancelled (shutdown): nobody may wait for ever
                _answer(group, StoreUnavailable("the store is closing; try again"))
                raise
            else:
                _answer(group, None)

    async def _one_by_one(self, group: list[tuple[NewNotification, asyncio.Future[None]]]) -> None:
        for new, future in group:
            try:
                await self._commit([new])
            except Exception as exc:
                _answer([(new, future)], exc)
            else:
                _answer([(new, future)], None)

    async def _commit(self, group: Sequence[NewNotification]) -> None:
        values = [insert_values(new) for new in group]
        # executemany is one transaction: all rows or none
        await self._pool.run(lambda db: db.executemany(INSERT, values))


def _answer(
    group: Sequence[tuple[NewNotification, asyncio.Future[None]]], error: Exception | None
) -> None:
    for _, future in group:
        if future.done():  # the caller went away (its request was cancelled)
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
