"""The accept path's hint of whose suppression lists hold anything: asked of the store at most
once a second per caller, and an entry put by this process counts at once."""

from __future__ import annotations

import asyncio

from app.api.suppression_hint import SuppressionHint


class Store:
    def __init__(self) -> None:
        self.callers: set[str] = set()
        self.asked = 0

    async def has_entries(self, caller: str) -> bool:
        self.asked += 1
        return caller in self.callers


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_store_is_asked_once_a_max_age_per_caller() -> None:
    store, clock = Store(), Clock()
    hint = SuppressionHint(store.has_entries, max_age=1.0, clock=clock)
    assert [await hint.may_have_entries("web") for _ in range(5)] == [False] * 5
    assert store.asked == 1
    store.callers.add("web")  # a hard bounce recorded elsewhere
    clock.now += 0.5
    assert await hint.may_have_entries("web") is False  # not yet known: the 202 may omit it
    clock.now += 0.6
    assert await hint.may_have_entries("web") is True
    assert store.asked == 2
    assert await hint.may_have_entries("billing") is False
    assert store.asked == 3


async def test_an_entry_put_here_counts_at_once() -> None:
    store, clock = Store(), Clock()
    hint = SuppressionHint(store.has_entries, clock=clock)
    assert await hint.may_have_entries("web") is False
    hint.added("web")
    assert await hint.may_have_entries("web") is True
    assert store.asked == 1


async def test_an_entry_put_while_the_store_is_asked_is_not_forgotten() -> None:
    # the store's answer was read before the PUT; it must not undo the PUT's `added`
    store, clock = Store(), Clock()
    asked, answer = asyncio.Event(), asyncio.Event()

    async def has_entries(caller: str) -> bool:
        before = await store.has_entries(caller)
        asked.set()
        await answer.wait()  # the round trip is still under way
        return before

    hint = SuppressionHint(has_entries, max_age=1.0, clock=clock)
    asking = asyncio.create_task(hint.may_have_entries("web"))
    await asked.wait()
    store.callers.add("web")
    clock.now += 0.1
    hint.added("web")  # a PUT of this process, committed after the store read
    answer.set()
    assert await asking is True
    clock.now += 0.1
    assert await hint.may_have_entries("web") is True
