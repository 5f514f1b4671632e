"""QUEUE_HIGH_WATER counts what waits across every replica on the store: the store's count, at
most a second old in each process, plus what that process accepted since."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.api.queue_depth import MAX_AGE_SECONDS, QueueDepth
from tests.conftest import WELCOME
from tests.replicas import replicas
from tests.smtp_server import SmtpServer


def later(**fields: Any) -> dict[str, Any]:
    """A notification scheduled an hour ahead: it waits, whatever the SMTP server does."""
    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return {**WELCOME, "send_at": send_at, **fields}


async def test_the_high_water_mark_reached_through_one_replica_holds_on_the_other_within_a_second(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # The relay is down, as when a queue grows: delivery waits for it, and no worker loop
    # counts anything; each replica must count for itself.
    await smtp.stop()
    async with replicas(tmp_path, smtp, queue_high_water=50) as (a, b):
        assert (await b.post("/v1/notifications", json=later())).status_code == 202
        b_counted_by = time.monotonic()  # B's count is from before this moment
        batch = {"notifications": [later()] * 49}
        assert (await a.post("/v1/notifications/batch", json=batch)).status_code == 202
        refused = await a.post("/v1/notifications", json=later())
        assert refused.status_code == 503  # A saw B's one in the store: 50 wait
        # B takes more only while its count may still be from before A filled the queue;
        # alone it has added far too few to reach 50, so its 503 comes from the store
        while True:
            started = time.monotonic()
            response = await b.post("/v1/notifications", json=later())
            if response.status_code == 503:
                break
            assert response.status_code == 202
            assert started - b_counted_by < MAX_AGE_SECONDS, "B used a count over a second old"
            await asyncio.sleep(0.05)
    assert "QUEUE_HIGH_WATER is 50" in response.json()["detail"]
    assert response.headers["retry-after"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_store_is_counted_at_most_once_a_second_and_own_additions_count_between() -> None:
    stored, counts = 7, 0

    async def count() -> int:
        nonlocal counts
        counts += 1
        return stored

    clock = Clock()
    depth = QueueDepth(count, clock=clock)
    assert await depth.current() == 7
    depth.added(3)
    stored = 100  # another replica accepted 90 more
    clock.now += MAX_AGE_SECONDS - 0.01
    assert (await depth.current(), counts) == (10, 1)  # ours show at once, theirs not yet
    clock.now += 0.01
    assert (await depth.current(), counts) == (100, 2)  # ours are in the store's count now


async def test_requests_that_find_the_count_old_wait_for_one_count_together() -> None:
    release, counts = asyncio.Event(), 0

    async def slow_count() -> int:
        nonlocal counts
        counts += 1
        await release.wait()
        return 5

    depth = QueueDepth(slow_count)
    waiting = [asyncio.create_task(depth.current()) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [5] * 20
    assert counts == 1


async def test_what_is_accepted_while_the_store_counts_is_not_forgotten() -> None:
    counting, release = asyncio.Event(), asyncio.Event()

    async def count() -> int:
        counting.set()
        await release.wait()
        return 10  # may or may not hold what was accepted meanwhile

    depth = QueueDepth(count)
    current = asyncio.create_task(depth.current())
    await counting.wait()
    depth.added(2)  # committed by another request of this process while the count runs
    release.set()
    assert await current == 12  # rather refuse a little early than let the queue grow


async def test_a_count_past_half_its_age_is_renewed_in_the_background_without_waiting() -> None:
    release, counts = asyncio.Event(), 0

    async def slow_count() -> int:
        nonlocal counts
        counts += 1
        if counts > 1:
            await release.wait()
        return 10 * counts

    clock = Clock()
    depth = QueueDepth(slow_count, clock=clock)
    assert await depth.current() == 10
    clock.now += MAX_AGE_SECONDS * 0.6
    # the fresh count is under way and held: requests go on with the current figure
    assert await asyncio.wait_for(depth.current(), timeout=5) == 10
    await asyncio.sleep(0)
    assert counts == 2
    assert await asyncio.wait_for(depth.current(), timeout=5) == 10  # one count at a time
    release.set()
    clock.now += MAX_AGE_SECONDS * 0.45  # the first count is over a second old: wait for the new
    assert await asyncio.wait_for(depth.current(), timeout=5) == 20
    assert counts == 2


async def test_a_failed_background_count_is_retried_and_its_error_reaches_who_waits() -> None:
    from app.errors import StoreUnavailable

    async def broken() -> int:
        raise StoreUnavailable("database unavailable")

    depth = QueueDepth(broken)
    for _ in range(2):  # the first request's error does not stay behind for the second
        try:
            await depth.current()
        except StoreUnavailable:
            continue
        raise AssertionError("a count that failed was not reported")
