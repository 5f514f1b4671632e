"""A bounded pool of open SMTP connections, so consecutive messages skip the connect, EHLO,
TLS and AUTH round trips. A connection that saw any error is closed, never reused; idle ones
are closed after a while, and one that sat idle is checked with NOOP before it is used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiosmtplib

# A connection idle longer than this is checked with NOOP before reuse: the server may have
# dropped it in the meantime.
_CHECK_AFTER_SECONDS = 1.0


class SmtpPool:
    def __init__(
        self,
        connect: Callable[[], Awaitable[aiosmtplib.SMTP]],
        *,
        size: int,
        idle_seconds: float,
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle_seconds = idle_seconds
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # most recently used last

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        async with self._slots:
            smtp = await self._take()
            try:
                yield smtp
            except BaseException:
                smtp.close()
                raise
            self._idle.append((smtp, time.monotonic()))

    async def _take(self) -> aiosmtplib.SMTP:
        while self._idle:
            smtp, since = self._idle.pop()
            idle = time.monotonic() - since
            fresh = smtp.is_connected and idle < self._idle_seconds
            if fresh and (idle < _CHECK_AFTER_SECONDS or await _alive(smtp)):
                return smtp
            smtp.close()
        return await self._connect()

    def close_idle(self) -> None:
        """Close connections idle for longer than the idle limit."""
        now = time.monotonic()
        keep = []
        for smtp, since in self._idle:
            if now - since < self._idle_seconds:
                keep.append((smtp, since))
            else:
                smtp.close()
        self._idle = keep

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
            smtp.close()


async def _alive(smtp: aiosmtplib.SMTP) -> bool:
    try:
        await smtp.noop()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True
