"""How many notifications are not finished yet (scheduled, queued, deferred or sending) across
every process on the store: what QUEUE_HIGH_WATER is compared with.

The store counts them at most once a second per process; in between, this process adds what
it accepted itself. Another replica's work shows within a second.

Once the count is half its allowed age, the next request starts a fresh count in the
background and goes on with the current figure: under load a count takes from a few to a
hundred milliseconds, and requests that waited for it stalled every store in the meantime (a
tenth of the accept rate). Only a count that has reached its full age is waited for.
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
        self._recounting: asyncio.Task[None] | None = None  # one count at a time

    async def current(self) -> int:
        age = self._age()
        if age >= self._max_age / 2 and self._recounting is None:
            self._recounting = asyncio.create_task(self._recount())
            # a failed count nobody waited for is retried by the next request; not an error
            self._recounting.add_done_callback(_retrieve)
        if age >= self._max_age and self._recounting is not None:
            # shielded: one request that goes away must not cancel the count the others await
            await asyncio.shield(self._recounting)
        return self._counted + self._added

    def added(self, count: int) -> None:
        """This process stored `count` more."""
        self._added += count

    def _age(self) -> float:
        if self._counted_at is None:
            return float("inf")
        return self._clock() - self._counted_at

    async def _recount(self) -> None:
        try:
            began, added_before = self._clock(), self._added
            counted = await self._count()
            # what was added while counting may be in the count or not: keep it, to err on
            # the side of refusing; what was added before is in it
            self._counted, self._added = counted, self._added - added_before
            self._counted_at = began
        finally:
            self._recounting = None


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
