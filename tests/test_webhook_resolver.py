"""Callback hosts are looked up on threads of their own, bounded per caller and in all, and a
host that ran out of time is refused at once for a while: a caller whose names never resolve
holds its share of the lookups, never another caller's, never the process's resolver.

A name server that never answers needs a resolv.conf of our choosing (root; see
test_attack_after's test through a mount namespace). Here the lookup is the system's for every
name but those under `.stalled`, whose lookup blocks its thread until the test lets it go, as a
name server that never answers does (for as long as resolv.conf's timeouts allow).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import AsyncIterator

import pytest

from app.webhooks.resolver import WebhookResolver, system_lookup
from app.webhooks.targets import RefusedTarget
from tests.conftest import wait_for

STALLED = ".stalled"
STALLED_ADDRESS = "192.0.2.7"  # what a stalled name resolves to once let go


class Lookups:
    """The system's lookup, except that names under .stalled hang until `release()`."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._go = threading.Event()

    def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if host.endswith(STALLED):
            self._go.wait()
            if host.startswith("gone"):
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [STALLED_ADDRESS]
        return system_lookup(host)

    def release(self) -> None:
        self._go.set()


@pytest.fixture
async def lookups() -> AsyncIterator[Lookups]:
    found = Lookups()
    yield found
    found.release()  # no thread outlives the test


def resolver(
    lookups: Lookups, *, threads: int = 16, per_caller: int = 4, negative_seconds: float = 60.0
) -> WebhookResolver:
    # a lookup that has run a quarter second marks its host slow: the tests wait 0.3 s
    return WebhookResolver(
        lookup=lookups,
        threads=threads,
        per_caller=per_caller,
        negative_seconds=negative_seconds,
        slow_seconds=0.25,
    )


async def refusal(
    resolving: WebhookResolver, host: str, *, caller: str, within: float = 0.3
) -> str:
    with pytest.raises(RefusedTarget) as refused:
        await resolving.addresses(host, caller=caller, within=within)
    return str(refused.value)


async def test_a_callers_hung_lookups_hold_its_share_and_no_more(lookups: Lookups) -> None:
    resolving = resolver(lookups, threads=8, per_caller=2)
    reasons = await asyncio.gather(
        *(refusal(resolving, f"h{i}{STALLED}", caller="billing") for i in range(5))
    )
    assert sum("did not resolve within 0.3 s" in r for r in reasons) == 2
    busy = "2 lookups of this caller's callback_url hosts are still under way"
    assert sum(busy in r for r in reasons) == 3
    assert resolving.running == 2 and len(lookups.asked) == 2  # the others never started
    # another caller's names resolve as ever, on the threads left
    (address, *_) = await resolving.addresses("localhost", caller="web", within=2)
    assert address.is_loopback
    # once the hung lookups end, the caller has its share again
    lookups.release()
    await wait_for(lambda: resolving.running == 0)
    assert await resolving.addresses(f"new{STALLED}", caller="billing", within=2) == [
        ipaddress.ip_address(STALLED_ADDRESS)
    ]


async def test_the_process_bound_holds_for_every_caller_together(lookups: Lookups) -> None:
    resolving = resolver(lookups, threads=3, per_caller=2)
    await asyncio.gather(
        refusal(resolving, f"a1{STALLED}", caller="a"),
        refusal(resolving, f"a2{STALLED}", caller="a"),
        refusal(resolving, f"b1{STALLED}", caller="b"),
    )
    assert resolving.running == 3
    reason = await refusal(resolving, "localhost", caller="c")
    assert "too many callback_url hosts are being looked up at once" in reason
    assert "localhost" not in lookups.asked
    lookups.release()
    await wait_for(lambda: resolving.running == 0)
    assert await resolving.addresses("localhost", caller="c", within=2)


async def test_a_host_that_timed_out_is_refused_at_once_then_looked_up_again_later(
    lookups: Lookups,
) -> None:
    resolving = resolver(lookups, negative_seconds=0.5)
    host = f"slow{STALLED}"
    first = await refusal(resolving, host, caller="billing")
    assert "did not resolve within 0.3 s; it is not looked up again for 0.5 s" in first
    loop = asyncio.get_running_loop()
    started = loop.time()
    again = await refusal(resolving, host, caller="web", within=5)  # anyone's: the host's
    assert loop.time() - started < 0.1
    assert "did not resolve in time moments ago; it is not looked up again for 1 s" in again
    assert lookups.asked == [host]
    lookups.release()

    async def resolves() -> bool:
        try:
            return bool(await resolving.addresses(host, caller="billing", within=2))
        except RefusedTarget as exc:
            assert "not looked up again" in str(exc)
            return False

    await wait_for(resolves, within=5)
    assert lookups.asked == [host, host]


async def test_lookups_of_one_host_at_once_share_one_thread(lookups: Lookups) -> None:
    resolving = resolver(lookups, per_caller=1)
    waiting = [
        asyncio.create_task(resolving.addresses(f"shared{STALLED}", caller=c, within=5))
        for c in ("a", "b", "b", "c")
    ]
    await wait_for(lambda: len(lookups.asked) == 1)
    lookups.release()
    found = await asyncio.gather(*waiting)
    assert found == [[ipaddress.ip_address(STALLED_ADDRESS)]] * 4
    assert lookups.asked == [f"shared{STALLED}"]


async def test_a_failed_lookup_is_refused_with_its_reason_and_frees_its_place(
    lookups: Lookups,
) -> None:
    resolving = resolver(lookups, per_caller=1)
    lookups.release()
    reason = await refusal(resolving, f"gone{STALLED}", caller="a", within=2)
    assert reason == f"host 'gone{STALLED}' does not resolve ([Errno -2] Name or service not known)"
    assert resolving.running == 0
    assert await resolving.addresses(f"next{STALLED}", caller="a", within=2)


async def test_an_address_is_not_looked_up(lookups: Lookups) -> None:
    resolving = resolver(lookups, threads=0)  # no thread at all: only literals can pass
    assert await resolving.addresses("10.0.0.1", caller="a", within=1) == [
        ipaddress.ip_address("10.0.0.1")
    ]
    assert await resolving.addresses("::1", caller="a", within=1) == [ipaddress.ip_address("::1")]
    assert lookups.asked == []


async def test_the_event_loops_resolver_is_free_while_every_webhook_lookup_hangs(
    lookups: Lookups,
) -> None:
    """Mail's lookups (aiosmtplib resolves SMTP_HOST on the loop's executor) never wait behind
    a callback's: with every webhook thread hung, the loop still resolves at once."""
    resolving = resolver(lookups, threads=16, per_caller=16)
    await asyncio.gather(
        *(refusal(resolving, f"h{i}{STALLED}", caller="billing") for i in range(16))
    )
    assert resolving.running == 16
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(2):
        found = await loop.getaddrinfo("localhost", 25, type=socket.SOCK_STREAM)
    assert found
