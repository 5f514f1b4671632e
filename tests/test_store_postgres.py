"""What only the PostgreSQL store promises: many processes on one database, wake-ups through
LISTEN/NOTIFY, migrations under a lock, and calls that end within DATABASE_TIMEOUT while the
server is away, then work again without recreating the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from app.api.schemas import Status
from app.errors import StoreUnavailable
from app.store.migrations import head, migrate
from app.store.postgres import PostgresStore
from app.store.postgres_listener import WorkListener
from tests.conftest import wait_for
from tests.factories import new

if TYPE_CHECKING:
    from tests.postgres import PrivatePostgres


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two processes would have."""
    a = await PostgresStore.open(postgres_url)
    b = await PostgresStore.open(postgres_url)
    yield a, b
    await a.close()
    await b.close()


class Wakes:
    """Counts the listener's calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def raises_unavailable_within(seconds: float, call: Callable[[], Awaitable[Any]]) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await call()
    assert time.monotonic() - started < seconds


# -- many processes, one database ---------------------------------------------------------


async def test_two_stores_never_claim_the_same_notification(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    batch = [new(due_in=-i / 1000) for i in range(300)]
    await stores[0].create_many(batch)
    claimed: list[str] = []

    async def drain(store: PostgresStore) -> None:
        while found := await store.claim_due(limit=7, lease_seconds=60):
            claimed.extend(n.id for n in found)

    await asyncio.gather(*(drain(s) for s in stores for _ in range(3)))
    assert sorted(claimed) == sorted(n.id for n in batch)  # each exactly once


async def test_one_queued_notification_goes_to_one_claimant(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    created, _ = await stores[0].create(new())
    results = await asyncio.gather(
        *(s.claim(created.id, lease_seconds=60) for s in stores for _ in range(5))
    )
    assert len([r for r in results if r is not None]) == 1


async def test_one_idempotency_key_sent_to_two_processes_makes_one_notification(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    results = await asyncio.gather(
        *(
            s.create(new(), idempotency_key="same", fingerprint="f", idempotency_ttl=60)
            for s in stores
            for _ in range(5)
        )
    )
    assert len({n.id for n, _ in results}) == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 9
    assert await stores[1].count_by_status() == {"queued": 1}


async def test_an_unreadable_row_is_failed_and_the_others_are_claimed(
    postgres_url: str, stores: tuple[PostgresStore, PostgresStore]
) -> None:
    batch = [new(due_in=-3), new(due_in=-2), new(due_in=-1)]
    await stores[0].create_many(batch)
    database = await asyncpg.connect(postgres_url)
    try:  # a row damaged behind our back: its request no longer parses
        await database.execute(
            "UPDATE notifications SET request = '{\"template\": 1' WHERE id = $1", batch[1].id
        )
        claimed = await stores[0].claim_due(limit=10, lease_seconds=60)
        assert sorted(n.id for n in claimed) == sorted([batch[0].id, batch[2].id])
        assert await stores[0].count_by_status() == {"sending": 2, "failed": 1}
        assert await stores[0].claim_due(limit=10, lease_seconds=60) == []
        reason = await database.fetchval(
            "SELECT last_error FROM notifications WHERE id = $1", batch[1].id
        )
    finally:
        await database.close()
    assert reason.startswith("stored notification unreadable (Invalid JSON")


async def test_concurrent_creates_commit_together_and_each_waits_for_its_own(
    postgres_url: str, stores: tuple[PostgresStore, PostgresStore]
) -> None:
    store = stores[0]
    batch = [new() for _ in range(60)]
    database = await asyncpg.connect(postgres_url)
    try:
        # every insert of the group lands in one transaction: the rows share its xmin
        await asyncio.gather(*(store.create(n) for n in batch))
        transactions = await database.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM notifications"
        )
    finally:
        await database.close()
    assert await store.count_waiting() == len(batch)
    assert transactions < len(batch) / 2, transactions


async def test_a_row_the_database_refuses_fails_alone_in_its_group(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    store = stores[0]
    good = [new() for _ in range(9)]
    bad = new(caller="nul\x00")  # PostgreSQL text cannot hold NUL
    results = await asyncio.gather(
        *(store.create(n) for n in [*good[:5], bad, *good[5:]]), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and not isinstance(failed[0], StoreUnavailable)
    for notification in good:
        assert await store.get(notification.id, owner=None) is not None


# -- waking workers -----------------------------------------------------------------------


async def test_new_work_wakes_a_listening_worker_within_a_second(
    postgres_url: str, stores: tuple[PostgresStore, PostgresStore]
) -> None:
    wakes = Wakes()
    listener = WorkListener(postgres_url, wakes)
    listener.start()
    try:
        await wait_for(lambda: listener.listening and wakes.count == 1)  # the wake on connect
        await stores[0].create(new())
        await wait_for(lambda: wakes.count == 2, within=1)
        await stores[1].create_many([new(), new()])  # one wake per transaction
        await wait_for(lambda: wakes.count == 3, within=1)
        await stores[0].create(new(status=Status.SCHEDULED, due_in=3600))
        due_later = await stores[0].count_waiting()
        assert due_later == 4 and wakes.count == 3  # nothing due: nobody woken
    finally:
        await listener.stop()


# -- the database goes away and comes back ------------------------------------------------


async def test_a_stopped_database_answers_unavailable_in_time_then_recovers(
    private_postgres: PrivatePostgres,
) -> None:
    store = await PostgresStore.open(private_postgres.url, database_timeout=1)
    wakes = Wakes()
    listener = WorkListener(private_postgres.url, wakes, database_timeout=1)
    listener.start()
    try:
        before, _ = await store.create(new())
        await wait_for(lambda: listener.listening)

        await private_postgres.stop()
        for call in (
            lambda: store.create(new()),
            lambda: store.get(before.id, owner=None),
            lambda: store.claim_due(limit=10, lease_seconds=60),
            lambda: store.count_waiting(),
            store.ping,
        ):
            await raises_unavailable_within(1.5, call)
        await wait_for(lambda: not listener.listening)

        await private_postgres.start()
        await wait_for(lambda: listener.listening, within=15)
        woken = wakes.count
        after, _ = await store.create(new())  # the same store, reconnected by itself
        assert await store.get(before.id, owner=None) is not None
        await wait_for(lambda: wakes.count > woken, within=1)
        claimed = await store.claim_due(limit=10, lease_seconds=60)
        assert {n.id for n in claimed} == {before.id, after.id}
    finally:
        await listener.stop()
        await store.close()


async def test_a_server_that_never_answers_is_unavailable_within_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, then say nothing until the client goes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = await PostgresStore.open(f"postgresql://u@127.0.0.1:{port}/db", database_timeout=0.5)
    try:
        await raises_unavailable_within(1.0, store.ping)
        await raises_unavailable_within(1.0, lambda: store.create(new()))
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


async def test_a_table_locked_by_another_session_is_unavailable_within_the_timeout(
    postgres_url: str,
) -> None:
    store = await PostgresStore.open(postgres_url, database_timeout=0.5)
    other = await asyncpg.connect(postgres_url)
    try:
        locking = other.transaction()
        await locking.start()
        await other.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        await raises_unavailable_within(1.0, store.count_waiting)
        await raises_unavailable_within(1.0, lambda: store.create(new()))
        await locking.rollback()
        assert await store.count_waiting() == 0  # the pool replaced the connection it cut
    finally:
        await other.close()
        await store.close()


# -- migrations ---------------------------------------------------------------------------


async def test_ten_replicas_migrating_at_once_leave_one_schema() -> None:
    from tests.postgres import drop_database, scratch_database

    url = await scratch_database()
    try:
        await asyncio.gather(*(migrate(url) for _ in range(10)))
        await migrate(url)  # at head already: nothing to do
        connection = await asyncpg.connect(url)
        try:
            versions = await connection.fetch("SELECT version_num FROM alembic_version")
            tables = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        finally:
            await connection.close()
        assert [v["version_num"] for v in versions] == [head()]
        assert [t["tablename"] for t in tables] == [
            "alembic_version",
            "attempts",
            "heartbeats",
            "idempotency_keys",
            "notifications",
            "suppressions",
            "webhook_attempts",
            "webhook_events",
        ]
    finally:
        await drop_database(url)
