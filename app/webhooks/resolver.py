"""Name lookups for callback URLs, kept apart from every other lookup of the process.

The system resolver (getaddrinfo: the hosts file, then DNS, as any connection finds a name)
blocks a thread, and a lookup cannot be stopped once started: a name whose servers never answer
holds its thread for as long as resolv.conf's timeouts and attempts allow (often 10-30 s),
whatever deadline we wait with. On the event loop's shared executor that would let a caller's
hostile names hold the threads that SMTP_HOST's lookups (aiosmtplib's) need, and delay mail.
So callback_url lookups run here, on threads of their own, and only here:

- at most THREADS lookups at once in the process, and at most PER_CALLER of them for one
  caller, counted until the thread is free again (not merely until we stopped waiting), so one
  caller's hung names can hold no more than its share;
- a host whose lookup itself ran for SLOW_SECONDS without an answer is refused at once for
  NEGATIVE_SECONDS instead of taking another thread (a wait that ran out while the lookup was
  queued, or under a shorter deadline, caches nothing: one caller cannot get another's host
  refused by keeping the threads busy), and lookups of a host already under way wait for it;
- waiting for a thread counts against the deadline; past it, the host is refused.

The threads are daemons: a lookup still hanging at exit does not hold the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from math import ceil

from app.webhooks.targets import IPAddress, RefusedTarget, literal

THREADS = 16  # lookups at once, in all
PER_CALLER = 4  # lookups at once of one caller's hosts
NEGATIVE_SECONDS = 60.0  # how long a host that did not resolve in time is refused without a try
SLOW_SECONDS = 2.0  # a lookup that has run this long without an answer marks its host as slow

Lookup = Callable[[str], list[str]]
# what a lookup thread hands back: the addresses, or why there are none
Outcome = tuple[list[str], str | None]


def system_lookup(host: str) -> list[str]:
    """Every address of `host` as the system's resolver finds it (blocking)."""
    found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    # an IPv6 scope id (fe80::1%eth0) is link-local anyway: the part before % decides
    return [str(sockaddr[0]).split("%", 1)[0] for *_, sockaddr in found]


class WebhookResolver:
    """The callback hosts' resolver of one process (one event loop)."""

    def __init__(
        self,
        *,
        threads: int = THREADS,
        per_caller: int = PER_CALLER,
        negative_seconds: float = NEGATIVE_SECONDS,
        slow_seconds: float = SLOW_SECONDS,
        lookup: Lookup = system_lookup,
    ) -> None:
        self._threads = threads
        self._per_caller = per_caller
        self._negative_seconds = negative_seconds
        self._slow_seconds = slow_seconds
        self._lookup = lookup
        self._running = 0
        self._by_caller: Counter[str] = Counter()
        self._under_way: dict[str, asyncio.Future[Outcome]] = {}
        self._timed_out: dict[str, float] = {}  # host: refused until (monotonic)
        self._waiting: list[asyncio.Future[None]] = []

    @property
    def running(self) -> int:
        """Lookup threads not yet finished (some may be hanging long after their deadline)."""
        return self._running

    async def addresses(self, host: str, *, caller: str, within: float) -> list[IPAddress]:
        """Every address of `host`, in the system resolver's order, looked up on `caller`'s
        share of the threads within `within` seconds; RefusedTarget if there is none in time."""
        if (address := literal(host)) is not None:
            return [address]
        self._refuse_if_timed_out(host)
        lookup: asyncio.Future[Outcome] | None = None
        try:
            async with asyncio.timeout(within):
                lookup = self._under_way.get(host) or await self._start(host, caller=caller)
                found, error = await asyncio.shield(lookup)
        except TimeoutError:
            if lookup is None:
                raise RefusedTarget(self._busy_reason(host, caller)) from None
            if host not in self._timed_out:  # the lookup itself has not been slow (yet)
                raise RefusedTarget(
                    f"host {host!r} did not resolve within {within:g} s; try again"
                ) from None
            raise RefusedTarget(
                f"host {host!r} did not resolve within {within:g} s; it is not looked up"
                f" again for {self._negative_seconds:g} s"
            ) from None
        if error is not None:
            raise RefusedTarget(f"host {host!r} does not resolve ({error})")
        addresses: list[IPAddress] = []
        for text in found:
            if (address := literal(text)) is not None and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise RefusedTarget(f"host {host!r} has no address")
        return addresses

    def _refuse_if_timed_out(self, host: str) -> None:
        now = time.monotonic()
        until = self._timed_out.get(host)
        if until is not None and until > now:
            raise RefusedTarget(
                f"host {host!r} did not resolve in time moments ago; it is not looked up again"
                f" for {ceil(until - now)} s"
            )
        # forget what has expired; the dict holds at most what THREADS can time out in a while
        for stale in [h for h, end in self._timed_out.items() if end <= now]:
            del self._timed_out[stale]

    def _busy_reason(self, host: str, caller: str) -> str:
        if self._by_caller[caller] >= self._per_caller:
            return (
                f"host {host!r} was not looked up: {self._per_caller} lookups of this caller's"
                " callback_url hosts are still under way (slow name servers); try again later"
            )
        return (
            f"host {host!r} was not looked up: too many callback_url hosts are being looked up"
            " at once; try again shortly"
        )

    async def _start(self, host: str, *, caller: str) -> asyncio.Future[Outcome]:
        """A thread looking `host` up, once the caller and the process have room for one."""
        loop = asyncio.get_running_loop()
        while True:
            if (under_way := self._under_way.get(host)) is not None:
                return under_way  # started by someone else while we waited
            if self._running < self._threads and self._by_caller[caller] < self._per_caller:
                break
            freed = loop.create_future()
            self._waiting.append(freed)
            try:
                await freed
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(freed)
        lookup: asyncio.Future[Outcome] = loop.create_future()
        self._running += 1
        self._by_caller[caller] += 1
        self._under_way[host] = lookup
        # the lookup's own age decides whether its host is slow, not a waiter's deadline
        loop.call_later(self._slow_seconds, self._mark_slow, host, lookup)

        def run() -> None:
            try:
                outcome: Outcome = (self._lookup(host), None)
            except Exception as exc:  # whatever it is, the thread's place must be freed
                outcome = ([], str(exc) or type(exc).__name__)
            with contextlib.suppress(RuntimeError):  # the loop is closed: no one is waiting
                loop.call_soon_threadsafe(self._finished, host, caller, lookup, outcome)

        try:
            threading.Thread(target=run, name="webhook-dns", daemon=True).start()
        except RuntimeError as exc:  # the system gave no thread: free the place taken for it
            self._finished(host, caller, lookup, ([], f"no thread to look it up: {exc}"))
        return lookup

    def _mark_slow(self, host: str, lookup: asyncio.Future[Outcome]) -> None:
        if not lookup.done():
            self._timed_out[host] = time.monotonic() + self._negative_seconds

    def _finished(
        self, host: str, caller: str, lookup: asyncio.Future[Outcome], outcome: Outcome
    ) -> None:
        self._running -= 1
        self._by_caller[caller] -= 1
        if self._by_caller[caller] <= 0:
            del self._by_caller[caller]
        if self._under_way.get(host) is lookup:
            del self._under_way[host]
        if not lookup.done():
            lookup.set_result(outcome)
        waiting, self._waiting = self._waiting, []
        for freed in waiting:
            if not freed.done():
                freed.set_result(None)
