"""Wakes a delivery worker the moment new work is stored, whichever machine stored it.

The PostgreSQL store sends NOTIFY on WORK_CHANNEL when it stores or gives back due work; this
listener holds a connection of its own with LISTEN on that channel and calls `on_work` for each
notification. While the connection is down, notifications are lost: so `on_work` is also called
after every (re)connection, and the worker's polling stays the fallback. A connection that died
without a word (a cut network) is found by a periodic `SELECT 1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from app.ops.logs import event
from app.store.postgres_announcer import WORK_CHANNEL
from app.store.postgres_pool import explain, is_unavailable

log = logging.getLogger("app.store.postgres")

_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0  # seconds between reconnection attempts, doubling


class WorkListener:
    def __init__(
        self,
        dsn: str,
        on_work: Callable[[], None],
        *,
        database_timeout: float = 5.0,
        keepalive: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._on_work = on_work
        self._timeout = database_timeout
        self._keepalive = keepalive
        self._task: asyncio.Task[None] | None = None
        self.listening = False  # LISTEN is in force right now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="work-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = _RETRY_FIRST
        while True:
            try:
                await self._listen()
                delay = _RETRY_FIRST
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("work_listener.error")
                elif delay == _RETRY_FIRST:  # say it once per outage, not once per retry
                    reason = explain(exc, timeout=self._timeout)
                    event(log, "work_listener.disconnected", level=logging.WARNING, reason=reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _listen(self) -> None:
        """Listen until the connection is lost; return (or raise) then."""
        async with asyncio.timeout(self._timeout):
            connection = await asyncpg.connect(self._dsn, timeout=self._timeout)
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        try:
            async with asyncio.timeout(self._timeout):
                await connection.add_listener(WORK_CHANNEL, self._notified)
            self.listening = True
            event(log, "work_listener.listening", channel=WORK_CHANNEL)
            self._on_work()  # whatever was announced while we were not listening
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._keepalive)
                if not lost.is_set():
                    await connection.execute("SELECT 1", timeout=self._timeout)
        finally:
            self.listening = False
            connection.terminate()

    def _notified(self, *_: object) -> None:
        self._on_work()
