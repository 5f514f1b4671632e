"""Process roles on one database: API processes that only accept (DELIVERY=off) and delivery
workers (`notifier worker`), each a real process, with the aiosmtpd server as the relay. Each
test runs on a SQLite file and on a PostgreSQL database; those about what only a server
database gives (its own outage, limits shared by replicas) run on PostgreSQL alone.

Workers greet the relay with names of their own (SMTP_LOCAL_HOSTNAME), so the server tells who
sent each copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.store.url import parse_database_url
from bench.processes import free_ports
from tests.conftest import BOTH_BACKENDS, WELCOME, make_settings, wait_for
from tests.live import Live, running, service_env, uvicorn_command, worker_running
from tests.redis_server import shared_redis, unique_prefix
from tests.smtp_server import SmtpServer

if TYPE_CHECKING:
    from tests.postgres import PrivatePostgres

pytestmark = pytest.mark.slow


async def query(database_url: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of `sql` (placeholders `$1`, `$2`, ...), read behind the service's back."""
    url = parse_database_url(database_url)
    if url.backend == "sqlite":
        sqlite_sql = sql
        for n in range(len(args), 0, -1):
            sqlite_sql = sqlite_sql.replace(f"${n}", "?")
        with contextlib.closing(sqlite3.connect(url.sqlite_path)) as db:
            return list(db.execute(sqlite_sql, args).fetchall())
    connection = await asyncpg.connect(url.postgres_dsn)
    try:
        return [tuple(row) for row in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


async def statuses(database_url: str) -> Counter[str]:
    rows = await query(database_url, "SELECT status, count(*) FROM notifications GROUP BY status")
    return Counter(dict(rows))


async def status_of(database_url: str, notification_id: str) -> str:
    [(status,)] = await query(
        database_url, "SELECT status FROM notifications WHERE id = $1", notification_id
    )
    return str(status)


async def all_sent(database_url: str, count: int, within: float) -> None:
    async def done() -> bool:
        return (await statuses(database_url)).get("sent") == count

    await wait_for(done, within=within)


def addressed(i: int) -> dict[str, Any]:
    return {**WELCOME, "to": [f"user{i}@example.com"]}


async def post(
    client: httpx.AsyncClient, request: dict[str, Any], headers: dict[str, str] | None = None
) -> str:
    response = await client.post("/v1/notifications", json=request, headers=headers)
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


async def post_many(apis: list[Live], count: int, first: int = 0) -> list[str]:
    """`count` notifications, each to a recipient of its own, spread over the APIs."""
    ids: list[str] = []
    for start in range(first, first + count, 25):
        ids += await asyncio.gather(
            *(
                post(apis[i % len(apis)].client, addressed(i))
                for i in range(start, min(start + 25, first + count))
            )
        )
    return ids


async def post_batch(api: Live, numbers: range) -> list[str]:
    batch = {"notifications": [addressed(i) for i in numbers]}
    response = await api.client.post("/v1/notifications/batch", json=batch)
    assert response.status_code == 202, response.text
    return [item["id"] for item in response.json()["items"]]


async def post_in_batches(
    apis: list[Live], count: int, first: int = 0, size: int = 100
) -> list[str]:
    """`count` notifications in batches of `size`, one batch to each API at once."""
    starts = range(first, first + count, size)
    ids: list[str] = []
    for pair in range(0, len(starts), len(apis)):
        batches = await asyncio.gather(
            *(
                post_batch(api, range(start, min(start + size, first + count)))
                for api, start in zip(apis, starts[pair : pair + len(apis)], strict=False)
            )
        )
        ids += [n for batch in batches for n in batch]
    return ids


@contextlib.asynccontextmanager
async def two_apis(env: dict[str, str], tmp_path: Path) -> AsyncIterator[list[Live]]:
    ports = free_ports(2)
    async with (
        running(uvicorn_command(ports[0]), env=env, port=ports[0], log=tmp_path / "api-a") as a,
        running(uvicorn_command(ports[1]), env=env, port=ports[1], log=tmp_path / "api-b") as b,
    ):
        yield [a, b]


def role_env(tmp_path: Path, smtp: SmtpServer, database_url: str, **extra: str) -> dict[str, str]:
    return service_env(
        tmp_path, smtp.port, DATABASE_URL=database_url, DELIVERY="off", POLL_INTERVAL="0.1", **extra
    )


@BOTH_BACKENDS
async def test_two_apis_and_two_workers_deliver_every_notification_exactly_once(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    # the 2,000 on PostgreSQL; SQLite, one file for every process, keeps today's 300
    count = 2000 if database_url.startswith("postgresql") else 300
    smtp.behaviour.stalls["DATA"] = 0.01  # sends take a moment, as with a real relay
    env = role_env(tmp_path, smtp, database_url, DELIVERY_CONCURRENCY="4")
    async with (
        two_apis(env, tmp_path) as apis,
        worker_running(
            env={**env, "SMTP_LOCAL_HOSTNAME": "worker-a.test"}, log=tmp_path / "worker-a"
        ),
        worker_running(
            env={**env, "SMTP_LOCAL_HOSTNAME": "worker-b.test"}, log=tmp_path / "worker-b"
        ),
    ):
        # both ways in: single requests, then batches
        ids = await post_many(apis, 100)
        ids += await post_in_batches(apis, count - 100, first=100)
        await all_sent(database_url, count, within=60)

    assert len(set(ids)) == count
    assert len(smtp.messages) == count
    assert set(smtp.copies().values()) == {1}
    recipients = Counter(rcpt for m in smtp.messages for rcpt in m.rcpt_tos)
    assert recipients == Counter({f"user{i}@example.com": 1 for i in range(count)})
    senders = Counter(m.client for m in smtp.messages)
    # the APIs sent nothing (DELIVERY=off), both workers sent some
    assert set(senders) == {"worker-a.test", "worker-b.test"}, senders


@BOTH_BACKENDS
async def test_kill_9_of_a_worker_mid_send_duplicates_only_its_sends_in_flight(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    # The doomed worker's relay keeps each message but never answers it: its sends are in
    # flight (the mail is at the relay, the outcome unknown) when it dies. Its claims come back
    # after its lease, 12 x SMTP_TIMEOUT = 12 s.
    smtp.behaviour.client_stalls["doomed.test"] = {"AFTER_DATA": 60}
    env = role_env(tmp_path, smtp, database_url, DELIVERY_CONCURRENCY="4", SMTP_TIMEOUT="1")
    count = 40
    async with two_apis(env, tmp_path) as apis:
        doomed_env = {**env, "SMTP_LOCAL_HOSTNAME": "doomed.test"}
        async with worker_running(env=doomed_env, log=tmp_path / "doomed") as doomed:
            ids = await post_many(apis, count)
            await wait_for(lambda: any(m.client == "doomed.test" for m in smtp.messages))
            doomed.kill()
            assert await asyncio.to_thread(doomed.wait, 10) == -signal.SIGKILL
        in_flight = {m.message_id for m in smtp.messages if m.client == "doomed.test"}
        survivor_env = {**env, "SMTP_LOCAL_HOSTNAME": "survivor.test"}
        async with worker_running(env=survivor_env, log=tmp_path / "survivor"):
            await all_sent(database_url, count, within=25)

    copies = smtp.copies()
    # every notification once, under one Message-ID; those in flight in the dead worker twice,
    # under the same Message-ID (the second copy from the survivor), and no other
    assert len(copies) == count == len(set(ids))
    assert {mid for mid, n in copies.items() if n > 1} == in_flight
    assert {copies[mid] for mid in in_flight} == {2}
    assert len(smtp.messages) == count + len(in_flight)
    by_client = Counter(m.client for m in smtp.messages)
    assert by_client == {"doomed.test": len(in_flight), "survivor.test": count}


@BOTH_BACKENDS
async def test_sigterm_lets_a_workers_sends_in_flight_finish_then_exits_0(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    smtp.behaviour.stalls["AFTER_DATA"] = 1.0  # the relay answers each message after a second
    env = role_env(
        tmp_path, smtp, database_url, DELIVERY_CONCURRENCY="2", SHUTDOWN_GRACE_SECONDS="10"
    )
    port = free_ports(1)[0]
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "api") as api:
        async with worker_running(env=env, log=tmp_path / "worker") as worker:
            ids = await post_many([api], 4)
            await wait_for(lambda: len(smtp.messages) == 2)  # both slots in flight
            in_flight = {m.rcpt_tos[0] for m in smtp.messages}
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 10) == 0
        # the two in flight were answered and recorded before the exit; no other was begun
        assert len(smtp.messages) == 2
        assert await statuses(database_url) == {"sent": 2, "queued": 2}
        sent = {
            f"user{i}@example.com"
            for i, n in enumerate(ids)
            if await status_of(database_url, n) == "sent"
        }
        assert sent == in_flight
        # the rest wait in the store for the next worker
        smtp.behaviour.stalls.clear()
        async with worker_running(env=env, log=tmp_path / "next"):
            await all_sent(database_url, 4, within=10)
    assert sorted(smtp.copies().values()) == [1, 1, 1, 1]


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


@BOTH_BACKENDS
async def test_a_worker_sends_a_scheduled_notification_after_its_time_and_never_a_cancelled_one(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    env = role_env(tmp_path, smtp, database_url)
    port = free_ports(1)[0]
    async with (
        running(uvicorn_command(port), env=env, port=port, log=tmp_path / "api") as api,
        worker_running(env=env, log=tmp_path / "worker"),
    ):
        now = time.time()  # once both have started, which may take longer than a second
        # the cancelled one falls due first: had it not been cancelled, it would go first
        cancelled = await post(api.client, {**addressed(1), "send_at": rfc3339(now + 1.0)})
        scheduled = await post(api.client, {**addressed(2), "send_at": rfc3339(now + 1.5)})
        response = await api.client.post(f"/v1/notifications/{cancelled}/cancel")
        assert response.status_code == 200, response.text
        assert smtp.messages == []

        async def sent() -> bool:
            return await status_of(database_url, scheduled) == "sent"

        await wait_for(sent, within=10)
        assert await status_of(database_url, cancelled) == "cancelled"
    [message] = smtp.messages
    assert message.rcpt_tos == ["user2@example.com"]
    assert message.at >= now + 1.5


@BOTH_BACKENDS
async def test_one_idempotency_key_sent_to_both_apis_at_once_makes_one_notification_one_mail(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    env = role_env(tmp_path, smtp, database_url)
    keys = 20  # races, each a key sent to both APIs at the same moment
    async with two_apis(env, tmp_path) as apis, worker_running(env=env, log=tmp_path / "worker"):
        for k in range(keys):
            headers = {"Idempotency-Key": f"the-same-request-{k}"}
            answers = await asyncio.gather(
                *(post(api.client, addressed(k), headers=headers) for api in apis)
            )
            assert answers[0] == answers[1]  # both replicas name the one notification
        await all_sent(database_url, keys, within=20)
    assert await statuses(database_url) == {"sent": keys}
    recipients = Counter(rcpt for m in smtp.messages for rcpt in m.rcpt_tos)
    assert recipients == Counter({f"user{k}@example.com": 1 for k in range(keys)})


# -- PostgreSQL only: what a server database shares between machines -------------------------


def later(i: int) -> dict[str, Any]:
    """Scheduled an hour ahead: it waits, whatever delivery does."""
    return {**addressed(i), "send_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}


async def test_queue_high_water_reached_through_one_api_process_holds_on_the_other(
    tmp_path: Path, smtp: SmtpServer, postgres_url: str
) -> None:
    env = role_env(tmp_path, smtp, postgres_url, QUEUE_HIGH_WATER="50")
    async with two_apis(env, tmp_path) as (a, b):
        batch = {"notifications": [later(i) for i in range(50)]}
        assert (await a.client.post("/v1/notifications/batch", json=batch)).status_code == 202
        assert (await a.client.post("/v1/notifications", json=later(50))).status_code == 503
        # B has accepted nothing and counted nothing yet: it counts now, and finds A's 50
        refused = await b.client.post("/v1/notifications", json=later(51))
        assert refused.status_code == 503, refused.text
        assert "QUEUE_HIGH_WATER is 50" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
    assert await statuses(postgres_url) == {"scheduled": 50}


async def test_a_rate_limit_in_redis_allows_10_a_minute_in_total_across_two_api_processes(
    tmp_path: Path, smtp: SmtpServer, postgres_url: str
) -> None:
    env = role_env(
        tmp_path,
        smtp,
        postgres_url,
        RATE_LIMIT="10/minute",
        RATE_LIMIT_STORAGE=await shared_redis(),
        RATE_LIMIT_KEY_PREFIX=unique_prefix(),
    )
    async with two_apis(env, tmp_path) as (a, b):
        answers = [
            await api.client.post("/v1/notifications", json=later(i))
            for i, api in enumerate((a, b) * 10)
        ]
    codes = [response.status_code for response in answers]
    assert codes == [202] * 10 + [429] * 10  # five through each, ten in all
    assert 50 <= int(answers[-1].headers["retry-after"]) <= 61
    assert await statuses(postgres_url) == {"scheduled": 10}


TIMEOUT = "1"  # DATABASE_TIMEOUT, seconds
SLACK = 1.5  # what an answer may take beyond it on a loaded machine


async def test_while_postgresql_is_down_apis_answer_503_workers_wait_and_all_is_sent_after(
    tmp_path: Path, smtp: SmtpServer, private_postgres: PrivatePostgres
) -> None:
    env = role_env(tmp_path, smtp, private_postgres.url, DATABASE_TIMEOUT=TIMEOUT)
    port = free_ports(1)[0]
    async with (
        running(uvicorn_command(port), env=env, port=port, log=tmp_path / "api") as api,
        worker_running(env=env, log=tmp_path / "worker") as worker,
    ):
        # accepted now, due while the database is away
        due_at = time.time() + 1.5
        before = [
            await post(api.client, {**addressed(i), "send_at": rfc3339(due_at)}) for i in range(5)
        ]
        await private_postgres.stop()

        refused = 0
        while time.time() < due_at + 2 or refused < 3:  # until the worker has met the outage
            started = time.monotonic()
            response = await api.client.post("/v1/notifications", json=addressed(99))
            assert time.monotonic() - started < float(TIMEOUT) + SLACK
            assert response.status_code == 503, response.text  # never a 202
            assert int(response.headers["retry-after"]) >= 1
            refused += 1
            assert worker.poll() is None, "the worker gave up while the database was away"
        batch = {"notifications": [addressed(98)]}
        assert (await api.client.post("/v1/notifications/batch", json=batch)).status_code == 503
        assert smtp.messages == []

        await private_postgres.start()
        # both processes reconnect by themselves: what was accepted before goes out, and the
        # API accepts again
        after = await post(api.client, addressed(5))
        await all_sent(private_postgres.url, 6, within=30)
    recipients = Counter(rcpt for m in smtp.messages for rcpt in m.rcpt_tos)
    assert recipients == Counter({f"user{i}@example.com": 1 for i in range(6)})
    assert {await status_of(private_postgres.url, n) for n in [*before, after]} == {"sent"}
    assert all(m.at >= due_at for m in smtp.messages)


# -- one process ---------------------------------------------------------------------------


@pytest.fixture
async def api_only(tmp_path: Path, smtp: SmtpServer) -> AsyncIterator[FastAPI]:
    from app.main import create_app

    application = create_app(make_settings(tmp_path, smtp.port, delivery="off"))
    async with application.router.lifespan_context(application):
        yield application


async def test_an_api_with_delivery_off_stores_and_sends_nothing(
    api_only: FastAPI, smtp: SmtpServer
) -> None:
    transport = httpx.ASGITransport(app=api_only)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        accepted = await client.post("/v1/notifications", json=WELCOME)
        assert accepted.status_code == 202
        batch = await client.post("/v1/notifications/batch", json={"notifications": [WELCOME]})
        assert batch.status_code == 202, batch.text
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        assert ready.json()["checks"]["delivery"].startswith("off")
        assert (await client.get("/metrics")).status_code == 200
        shown = await client.get(accepted.headers["location"])
        assert shown.json()["status"] == "queued"
    services = api_only.state.services
    assert services.worker is None
    assert await services.store.last_heartbeat() is None  # nothing here delivers
    assert smtp.messages == [] and smtp.connected_at == []


async def test_an_api_that_delivers_beats_like_a_worker(app: FastAPI) -> None:
    store = app.state.services.store

    async def beat() -> bool:
        return await store.last_heartbeat() is not None

    await wait_for(beat, within=5)
