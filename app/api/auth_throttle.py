"""AUTH_FAILURE_LIMIT: failed authentication counted per client address, in the storage of
RATE_LIMIT (memory, or Redis shared by every replica), and refused with 429 past the limit.

Only failures are counted and only failures are refused: a correct key never waits for the
storage and is never refused, so an attacker behind the same address (a NAT, a proxy) cannot
lock out the legitimate services there. IPv6 addresses count per /64, the block one host
usually holds, so an attacker cannot get a fresh allowance from each of its addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import time

from fastapi import HTTPException, status
from starlette.types import Scope

from app.api.rate_limit import RateLimit, RateLimiter
from app.ops.logs import event
from app.ops.metrics import Metrics

log = logging.getLogger("app.api.auth_throttle")

# IPv6 hosts usually hold a whole /64 (RFC 4291 2.5.1, SLAAC): count the block, not the address
_IPV6_BLOCK = 64
# addresses whose throttling this process remembers having logged (a few hundred KiB at most)
_NOTED_MAX = 4096
# caller names never hold "/", so this namespace never meets RATE_LIMIT's in a shared storage
_NAMESPACE = "auth-failures/"


def client_key(scope: Scope) -> str:
    """The address that failures of this request count against: the peer's IP address (what
    uvicorn put there, from X-Forwarded-For only behind a proxy it trusts), an IPv6 one as its
    /64, an IPv4-mapped IPv6 one as the IPv4 address; "unknown" without a network peer."""
    client = scope.get("client")
    host: str | None = client[0] if client else None
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a Unix socket's path, say: all its clients are one
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, _IPV6_BLOCK), strict=False))
    return str(address)


class AuthThrottle:
    """Count one failed authentication from an address; refuse it once the address has failed
    AUTH_FAILURE_LIMIT times within the limit's window."""

    def __init__(self, limiter: RateLimiter, limit: RateLimit | None, *, metrics: Metrics) -> None:
        self._limiter = limiter
        self._limit = limit  # None: AUTH_FAILURE_LIMIT=off, failures are only counted
        self._noted: dict[str, float] = {}  # address: until when its throttling is logged
        self._refused = metrics.auth_failures.labels("refused")
        self._throttled = metrics.auth_failures.labels("throttled")

    @classmethod
    def from_settings(
        cls, limit: RateLimit | None, *, storage: str, key_prefix: str, metrics: Metrics
    ) -> AuthThrottle:
        return cls(RateLimiter(storage=storage, key_prefix=key_prefix), limit, metrics=metrics)

    async def failed(self, scope: Scope) -> float:
        """Count a failure of this request's address: 0 while the address is within the limit,
        else the whole seconds after which its next failure would be answered 401 again."""
        if self._limit is None:
            self._refused.inc()
            return 0.0
        address = client_key(scope)
        wait = await self._limiter.take(_NAMESPACE + address, 1, self._limit)
        if wait:
            self._throttled.inc()
            self._note(address, wait)
        else:
            self._refused.inc()
        return wait

    def _note(self, address: str, wait: float) -> None:
        """Log that an address is throttled, once a while for each (an attacker must not be
        able to flood the log): what an operator needs to block it further out."""
        now = time.monotonic()
        if self._noted.get(address, 0.0) > now:
            return
        if len(self._noted) >= _NOTED_MAX:  # many addresses at once: forget the stale ones
            self._noted = {a: until for a, until in self._noted.items() if until > now}
            if len(self._noted) >= _NOTED_MAX:
                self._noted.clear()
        self._noted[address] = now + wait
        event(
            log,
            "auth.throttled",
            level=logging.WARNING,
            address=address,
            retry_after=round(wait),
            limit=str(self._limit),
        )

    def too_many(self, wait: float) -> HTTPException:
        """The 429 for a failure past the limit. It names neither the key nor the address."""
        return HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many failed authentications from this address (AUTH_FAILURE_LIMIT"
            f" {self._limit}); retry in {wait:.0f} s",
            headers={"Retry-After": f"{wait:.0f}"},
        )

    async def close(self) -> None:
        await self._limiter.close()
