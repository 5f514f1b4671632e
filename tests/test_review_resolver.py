"""Review findings on the callback resolver (app.webhooks.resolver).

A host goes on the negative cache (refused to every caller for NEGATIVE_SECONDS) when a
caller's wait for it runs out, even when most of that wait was spent queueing for one of the
caller's own lookup threads and the lookup itself ran for a moment. So a caller whose own names
hang can get any host, another caller's healthy receiver included, refused process-wide.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.webhooks.resolver import WebhookResolver
from app.webhooks.targets import RefusedTarget

LOOKUP_SECONDS = 0.5  # how long the healthy name's name server takes to answer


class Lookups:
    """Names under .stalled hang until `release()`; every other name answers after
    LOOKUP_SECONDS with a public address, as a slowish but healthy name server does."""

    def __init__(self) -> None:
        self._go = threading.Event()
        self._never = threading.Event()  # the name server's latency, never cut short

    def __call__(self, host: str) -> list[str]:
        if host.endswith(".stalled"):
            self._go.wait()
            return ["192.0.2.7"]
        self._never.wait(LOOKUP_SECONDS)
        return ["93.184.216.34"]

    def release(self) -> None:
        self._go.set()


async def test_a_callers_queueing_does_not_refuse_a_healthy_host_to_others() -> None:
    lookups = Lookups()
    resolving = WebhookResolver(lookup=lookups, per_caller=1, negative_seconds=60.0)
    loop = asyncio.get_running_loop()
    try:
        # the hostile caller's only slot is held by a name that hangs
        with pytest.raises(RefusedTarget):
            await resolving.addresses("x.stalled", caller="hostile", within=0.1)
        # its name server answers just before the next wait runs out; that wait began queueing
        loop.call_later(1.7, lookups.release)
        started = time.monotonic()
        with pytest.raises(RefusedTarget):
            await resolving.addresses("hooks.victim.test", caller="hostile", within=2.0)
        assert time.monotonic() - started >= 1.9
        # the victim's healthy host (0.5 s to resolve) must still be looked up for the victim
        found = await resolving.addresses("hooks.victim.test", caller="victim", within=5.0)
        assert [str(a) for a in found] == ["93.184.216.34"]
    finally:
        lookups.release()
