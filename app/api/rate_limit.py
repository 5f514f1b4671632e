"""Per-caller rate limits: RATE_LIMIT's spec, and the limiter that keeps it in this process's
memory or, with RATE_LIMIT_STORAGE=redis://…, in Redis, shared by every replica.

While Redis does not answer, each process limits on its own (as with memory://) and says so
in the log; it asks Redis again after a pause, and goes back to it as soon as it answers. A
request never waits for Redis longer than STORAGE_TIMEOUT, and never fails because of it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from limits.errors import StorageError
from pydantic import BaseModel, ConfigDict

from app.api.rate_limit_window import MovingWindow
from app.ops.logs import event

log = logging.getLogger("app.api.rate_limit")

_PER = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_SPEC = re.compile(r"\s*([0-9]+)\s*/\s*(second|minute|hour)\s*")

MEMORY = "memory://"
# Redis answers within a millisecond on a LAN; past this, the request goes on without it.
STORAGE_TIMEOUT = 1.0
# While Redis does not answer, one request per process asks again this often; the others
# use the process's own limit, so an unreachable Redis costs a request at most one timeout.
_RETRY_SHARED_SECONDS = 1.0


class RateLimit(BaseModel):
    model_config = ConfigDict(frozen=True)

    count: int
    seconds: float

    @classmethod
    def parse(cls, spec: str) -> RateLimit:
        match = _SPEC.fullmatch(spec.lower())
        if match is None or int(match[1]) == 0:
            raise ValueError("must look like 600/minute (per second, minute or hour)")
        return cls(count=int(match[1]), seconds=_PER[match[2]])

    def __str__(self) -> str:
        unit = {v: k for k, v in _PER.items()}[self.seconds]
        return f"{self.count}/{unit}"


class RateLimiter:
    """Each caller may spend a limit's `count` units in any span of its `seconds`, and no
    request may cost more than that. The limit comes with each request (RATE_LIMIT, or the
    key's own rate_limit): each limit counts in a window of its own."""

    def __init__(
        self,
        *,
        storage: str = MEMORY,
        key_prefix: str = "notifier",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._local = MovingWindow.in_memory(clock=clock)
        self._shared = (
            None
            if storage == MEMORY
            else MovingWindow.in_redis(
                storage, key_prefix=key_prefix, timeout=STORAGE_TIMEOUT, clock=clock
            )
        )
        self._storage = _without_password(storage)
        self._unreachable: str | None = None  # why the shared storage did not answer
        self._retry_shared_at = 0.0
        self._asking = False  # a request is asking the unreachable storage again

    async def take(self, caller: str, cost: int, limit: RateLimit) -> float:
        """Spend `cost` units of `limit`; 0 if allowed. Else nothing is spent and the answer is
        the whole seconds after which the same request will pass if the caller spends nothing
        meanwhile: what Retry-After must say to be true."""
        if cost > limit.count:
            raise ValueError(f"a request costing {cost} can never fit a limit of {limit}")
        spec = str(limit)
        shared = self._shared
        if shared is None or not self._may_ask_shared():
            return await self._local.take(caller, cost, spec)
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT):
                wait = await shared.take(caller, cost, spec)
        except (StorageError, OSError, TimeoutError) as exc:
            self._shared_failed(exc)
            return await self._local.take(caller, cost, spec)
        finally:
            self._asking = False
        self._shared_answered()
        return wait

    async def close(self) -> None:
        await self._local.close()
        if self._shared is not None:
            await self._shared.close()

    def _may_ask_shared(self) -> bool:
        if self._unreachable is None:
            return True
        if self._asking or time.monotonic() < self._retry_shared_at:
            return False
        self._asking = True
        return True

    def _shared_failed(self, exc: Exception) -> None:
        self._retry_shared_at = time.monotonic() + _RETRY_SHARED_SECONDS
        if self._unreachable is None:
            self._unreachable = str(exc) or type(exc).__name__
            event(
                log,
                "rate_limit.storage_unreachable",
                level=logging.WARNING,
                storage=self._storage,
                reason=self._unreachable,
                hint="each process limits callers on its own until it answers",
            )

    def _shared_answered(self) -> None:
        if self._unreachable is not None:
            self._unreachable = None
            event(log, "rate_limit.storage_back", storage=self._storage)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()
