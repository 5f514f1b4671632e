"""Per-caller rate limits: a token bucket per API key, in this process's memory."""

from __future__ import annotations

import math
import re
import time

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
    to `count` is allowed."""

    def __init__(self, limit: RateLimit) -> None:
        self._limit = limit
        self._rate = limit.count / limit.seconds
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)

    def take(self, caller: str, cost: int = 1) -> float:
        """Spend `cost` units; 0 if allowed, else the seconds to wait before retrying."""
        cost = min(cost, self._limit.count)  # a batch larger than the limit passes on a full bucket
        now = time.monotonic()
        tokens, at = self._buckets.get(caller, (float(self._limit.count), now))
        tokens = min(float(self._limit.count), tokens + (now - at) * self._rate)
        if tokens >= cost:
            self._buckets[caller] = (tokens - cost, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return max(1.0, math.ceil((cost - tokens) / self._rate))
