"""Per-caller rate limits: a token bucket per API key, in this process's memory."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

_PER = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_SPEC = re.compile(r"\s*([0-9]+)\s*/\s*(second|minute|hour)\s*")


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
    """Each caller may spend `count` units per `seconds`, refilled continuously; a burst of up
    to `count` is allowed, and no request may cost more than that."""

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._rate = limit.count / limit.seconds
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)

    @property
    def burst(self) -> int:
        """The most units one request can ever spend: a full bucket."""
        return self._limit.count

    def take(self, caller: str, cost: int = 1) -> float:
        """Spend `cost` units; 0 if allowed. Else nothing is spent and the answer is the whole
        seconds after which the same request will pass if the caller spends nothing
        meanwhile: what Retry-After must say to be true."""
        if cost > self._limit.count:
            raise ValueError(f"a request costing {cost} can never fit a bucket of {self}")
        now = self._clock()
        tokens, at = self._buckets.get(caller, (float(self._limit.count), now))
        tokens = min(float(self._limit.count), tokens + (now - at) * self._rate)
        if tokens + _EPSILON >= cost:
            self._buckets[caller] = (max(0.0, tokens - cost), now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return float(max(1, math.ceil((cost - tokens) / self._rate)))

    def __str__(self) -> str:
        return str(self._limit)


# Refills are sums of float products; a retry exactly on time must not miss by a rounding error.
_EPSILON = 1e-9
