"""RATE_LIMIT: a moving window per caller, kept in each process's memory or in Redis, shared by
every replica; a Retry-After that is true; a Redis that fails costs neither a 500 nor a hang."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import SimpleNamespace

import limits.aio.storage.memory
import limits.aio.storage.redis.redispy
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.api.rate_limit import STORAGE_TIMEOUT
from app.api.rate_limit_window import MovingWindow
from bench.processes import free_port
from tests.conftest import WELCOME, wait_for
from tests.log_records import recorded
from tests.redis_server import private_redis, shared_redis, unique_prefix
from tests.replicas import replicas
from tests.smtp_server import SmtpServer
from tests.test_delivery import service


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def library_clock(clock: Clock) -> Iterator[None]:
    """`limits` stamps each entry with time.time(), and its Redis scripts compare the stamps
    the client sends: let the test move time instead of waiting for it."""
    with pytest.MonkeyPatch.context() as patch:
        for module in (limits.aio.storage.memory, limits.aio.storage.redis.redispy):
            patch.setattr(module, "time", SimpleNamespace(time=clock))
        yield


async def _retry_after_is_true(
    clock: Clock, storage: str, count: int, per: float, requests: list[tuple[float, int]]
) -> None:
    spec = f"{count}/{ {1.0: 'second', 60.0: 'minute', 3600.0: 'hour'}[per] }"
    if storage == "memory":
        window = MovingWindow.in_memory(limit=spec, clock=clock)
    else:
        url = await shared_redis()
        window = MovingWindow.in_redis(
            url, limit=spec, key_prefix=unique_prefix(), timeout=5, clock=clock
        )
    try:
        for elapsed, wanted in requests:
            cost = min(wanted, count)  # more than the window is a 422 before charging
            clock.now += elapsed * per
            wait = await window.take("c", cost)
            if not wait:
                continue
            assert wait == int(wait) >= 1
            assert wait <= per + 1  # never more than the window itself
            if wait > 1:  # not a second earlier (less Redis's rounding of times)
                clock.now += wait - 1 - 0.002
                assert await window.take("c", cost) > 0
                clock.now += 1 + 0.002
            else:
                clock.now += wait
            assert await window.take("c", cost) == 0
    finally:
        await window.close()


@pytest.mark.parametrize("storage", ["memory", "redis"])
@hypothesis_settings(max_examples=150, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=50),
    per=st.sampled_from([1.0, 60.0, 3600.0]),
    requests=st.lists(
        st.tuples(st.floats(min_value=0, max_value=1), st.integers(min_value=1, max_value=50)),
        max_size=30,
    ),
)
def test_a_refused_request_passes_once_its_retry_after_has_passed_and_not_before(
    storage: str, count: int, per: float, requests: list[tuple[float, int]]
) -> None:
    """Whatever came before, in memory and in Redis: a request refused with Retry-After
    passes after that many seconds if the caller spends nothing meanwhile, and is still
    refused a second earlier."""
    clock = Clock()
    with library_clock(clock):
        asyncio.run(_retry_after_is_true(clock, storage, count, per, requests))


async def test_a_limit_kept_in_redis_allows_its_count_once_across_two_replicas(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    shared = {
        "rate_limit": "10/minute",
        "rate_limit_storage": await shared_redis(),
        "rate_limit_key_prefix": unique_prefix(),
    }
    async with replicas(tmp_path, smtp, **shared) as (a, b):
        batch = await a.post("/v1/notifications/batch", json={"notifications": [WELCOME] * 6})
        assert batch.status_code == 202
        singles = [await replica.post("/v1/notifications", json=WELCOME) for replica in (b, a) * 4]
    codes = [response.status_code for response in singles]
    assert codes == [202] * 4 + [429] * 4  # 6 + 4: ten in all, whichever replica took them
    retry_after = int(singles[-1].headers["retry-after"])
    assert 50 <= retry_after <= 61  # when the first of the ten leaves the minute


async def test_a_limit_kept_in_memory_counts_for_each_process_alone(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with replicas(tmp_path, smtp, rate_limit="10/minute") as (a, b):
        codes = [
            (await replica.post("/v1/notifications", json=WELCOME)).status_code
            for replica in (a, b) * 11
        ]
    assert codes == [202] * 20 + [429] * 2


@pytest.fixture
def rate_limit_log() -> Iterator[list[logging.LogRecord]]:
    with recorded("app.api.rate_limit") as records:
        yield records


def events(records: list[logging.LogRecord]) -> list[tuple[str, int]]:
    return [(record.getMessage(), record.levelno) for record in records]


async def test_while_redis_refuses_connections_each_process_limits_on_its_own(
    tmp_path: Path, smtp: SmtpServer, rate_limit_log: list[logging.LogRecord]
) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    async with service(tmp_path, smtp, rate_limit="3/minute", rate_limit_storage=closed) as client:
        codes = [(await client.post("/v1/notifications", json=WELCOME)).status_code for _ in "1234"]
    assert codes == [202, 202, 202, 429]
    assert events(rate_limit_log) == [("rate_limit.storage_unreachable", logging.WARNING)]


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that takes connections and never answers: a Redis behind a dead link."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_redis_that_never_answers_delays_a_request_at_most_its_timeout(
    tmp_path: Path, smtp: SmtpServer, rate_limit_log: list[logging.LogRecord]
) -> None:
    async with (
        silent_server() as port,
        service(
            tmp_path, smtp, rate_limit="3/minute", rate_limit_storage=f"redis://127.0.0.1:{port}"
        ) as client,
    ):
        timings = []
        for _ in range(3):
            started = time.monotonic()
            response = await client.post("/v1/notifications", json=WELCOME)
            timings.append(time.monotonic() - started)
            assert response.status_code == 202
    assert STORAGE_TIMEOUT <= timings[0] < STORAGE_TIMEOUT + 2
    assert max(timings[1:]) < STORAGE_TIMEOUT / 2  # the next ones do not wait for it again
    assert events(rate_limit_log) == [("rate_limit.storage_unreachable", logging.WARNING)]


async def test_the_limit_goes_back_to_redis_as_soon_as_it_answers_again(
    tmp_path: Path, smtp: SmtpServer, rate_limit_log: list[logging.LogRecord]
) -> None:
    async def post() -> int:
        return (await client.post("/v1/notifications", json=WELCOME)).status_code

    async with (
        private_redis(tmp_path) as redis,
        service(tmp_path, smtp, rate_limit="2/minute", rate_limit_storage=redis.url) as client,
    ):
        assert await post() == 202  # counted in Redis
        await redis.stop()
        assert [await post(), await post(), await post()] == [202, 202, 429]  # here alone
        await redis.start()  # empty: it keeps nothing on disk

        async def shared_again() -> bool:
            return await post() == 202

        await wait_for(shared_again, within=10)
        assert [await post(), await post()] == [202, 429]  # the fresh window in Redis
    assert events(rate_limit_log) == [
        ("rate_limit.storage_unreachable", logging.WARNING),
        ("rate_limit.storage_back", logging.INFO),
    ]
