"""How many notifications are not finished yet (scheduled, queued, deferred or sending) across
every process on the store: what QUEUE_HIGH_WATER is compared with.

The store counts them at most once a second per process; in between, this process adds what
it accepted itself. Another replica's work shows within a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

MAX_AGE_SECONDS = 1.0


class QueueDepth:
    def __init__(
        self,
        count: Callable[[], Awaitable[int]],
        *,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self._max_age = max_age
        self._clock = clock
        self._counted = 0
        self._counted_at: float | None = None
        self._added = 0  # accepted here since the count began
        self._lock = asyncio.Lock()  # one count at a time: the others wait for its answer

    async def current(self) -> int:
        if self._stale():
            async with self._lock:
                if self._stale():
                    await self._recount()
        return self._counted + self._added

    def added(self, count: int) -> None:
        """This process stored `count` more."""
        self._added += count

    def _stale(self) -> bool:
        return self._counted_at is None or self._clock() - self._counted_at >= self._max_age

    async def _recount(self) -> None:
        began, added_before = self._clock(), self._added
        counted = await self._count()
        # what was added while counting may be in the count or not: keep it, to err on the
        # side of refusing; what was added before is in it
        self._counted, self._added = counted, self._added - added_before
        self._counted_at = began
