"""One moving window of the `limits` library over one storage (this process's memory, or
Redis shared by every replica), answering a refusal with the wait after which the same
request passes."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import limits
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# Redis keeps an entry's time to 14 digits (a tenth of a millisecond): never promise a time
# that rounding could make a moment too early.
_ROUNDING = 0.001


class MovingWindow:
    """At most `count` units per caller in any span of `seconds` (`limits`' moving window:
    each unit is an entry with its time; a request passes while the window holds room for
    its whole cost). Each limit is a window of its own: `limits` puts it in the entry's key."""

    def __init__(
        self,
        storage: MemoryStorage | RedisStorage,
        *,
        limit: str | None = None,
        clock: Callable[[], float] = time.time,
        pool: ConnectionPool | None = None,
    ) -> None:
        self._storage = storage
        self._default = limit
        self._items: dict[str, limits.RateLimitItem] = {}
        self._strategy = MovingWindowRateLimiter(storage)
        self._clock = clock  # the library's: it stamps entries with time.time()
        self._pool = pool

    @classmethod
    def in_memory(
        cls, *, limit: str | None = None, clock: Callable[[], float] = time.time
    ) -> MovingWindow:
        return cls(_MemoryStorage(), limit=limit, clock=clock)

    @classmethod
    def in_redis(
        cls,
        url: str,
        *,
        limit: str | None = None,
        key_prefix: str,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> MovingWindow:
        # Our own pool, so that we can close it and bound every step: connect and each reply
        # within `timeout`, and one retry without backoff (a pooled connection that Redis
        # closed is replaced at once; redis-py's default retries for seconds).
        pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), retries=1),
        )
        options: dict[str, Any] = {"connection_pool": pool}
        storage = RedisStorage(
            f"async+{url}",
            implementation="redispy",
            key_prefix=key_prefix,
            wrap_exceptions=True,  # any Redis failure is a limits StorageError
            **options,
        )
        return cls(storage, limit=limit, clock=clock, pool=pool)

    async def take(self, caller: str, cost: int, limit: str | None = None) -> float:
        """0 if `cost` units of `limit` (else the window's own) were taken; else none are, and
        the answer is the whole seconds after which the same request passes if the caller
        spends nothing meanwhile."""
        item = self._item(limit or self._default)
        if await self._strategy.hit(item, caller, cost=cost):
            return 0.0
        # `cost` more fit once the window's (count - cost + 1)th newest entry has left it
        nth = item.amount - cost + 1
        expiry = item.get_expiry()
        stamp, entries = await self._storage.get_moving_window(item.key_for(caller), nth, expiry)
        if entries < nth:  # it left since we asked: the least a Retry-After can say
            return 1.0
        # an entry counts while it is at most `expiry` old: it has left only after that
        left_in = stamp + expiry - self._clock()
        return float(max(1, math.floor(left_in + _ROUNDING) + 1))

    def _item(self, limit: str | None) -> limits.RateLimitItem:
        if limit is None:
            raise ValueError("a window without a limit of its own needs one per request")
        if (item := self._items.get(limit)) is None:
            item = self._items[limit] = limits.parse(limit)
        return item

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        sweep = self._storage.timer if isinstance(self._storage, MemoryStorage) else None
        if sweep is not None:  # the memory storage's expiry sweep; it ends quietly when cancelled
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)


class _MemoryStorage(MemoryStorage):
    """`limits`' memory storage, answering `get_moving_window` within the newest `limit`
    entries as its Redis storage does: a refused batch's wait depends on the entry at that
    rank, not on the oldest."""

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        stamp, entries = await super().get_moving_window(key, limit, expiry)
        if entries <= limit:
            return stamp, entries
        return self.events[key][limit - 1].atime, limit  # newest first
