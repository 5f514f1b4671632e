"""Whether a caller has anything on its suppression list, as the store said at most a second
ago: the accept path looks its recipients up only for callers that do.

The 202 lists the recipients that will be skipped (delivery checks the list again, always, at
every attempt). Looking them up costs a database round trip on every accept, a third of the
accept rate on SQLite (bench/), for the many callers whose list is empty. This asks the store
once a second per caller instead; an entry added by this process (PUT) counts at once, one
added elsewhere (a hard bounce recorded by delivery, another replica) within a second.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

MAX_AGE_SECONDS = 1.0


class SuppressionHint:
    def __init__(
        self,
        has_entries: Callable[[str], Awaitable[bool]],
        *,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._has_entries = has_entries
        self._max_age = max_age
        self._clock = clock
        self._known: dict[str, tuple[bool, float]] = {}  # caller: (has entries, asked at)

    async def may_have_entries(self, caller: str) -> bool:
        known = self._known.get(caller)
        now = self._clock()
        if known is not None and now - known[1] < self._max_age:
            return known[0]
        has = await self._has_entries(caller)
        newer = self._known.get(caller)
        if newer is not None and newer[1] > now:
            # put (`added`) or asked again while this answer was on its way: the newer one holds
            return newer[0] or has
        self._known[caller] = (has, now)
        return has

    def added(self, caller: str) -> None:
        """This process put an entry on `caller`'s list."""
        self._known[caller] = (True, self._clock())
