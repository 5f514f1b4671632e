"""Process roles on one database: API processes that only accept (DELIVERY=off) and delivery
workers (`notifier worker`), each a real process, with the aiosmtpd server as the relay.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bench.processes import free_ports
from tests.conftest import WELCOME, make_settings, wait_for
from tests.live import Live, running, service_env, uvicorn_command, worker_running
from tests.smtp_server import SmtpServer

pytestmark = pytest.mark.slow


def database(tmp_path: Path) -> Path:
    return tmp_path / "live.db"  # service_env's DATABASE_URL


def statuses(db: Path) -> Counter[str]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute("SELECT status, count(*) FROM notifications GROUP BY status")
        return Counter(dict(rows.fetchall()))


def status_of(db: Path, notification_id: str) -> str:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        row = connection.execute(
            "SELECT status FROM notifications WHERE id = ?", (notification_id,)
        ).fetchone()
    return str(row[0])


async def all_sent(db: Path, count: int, within: float) -> None:
    await wait_for(lambda: statuses(db).get("sent") == count, within=within)


def addressed(i: int) -> dict[str, Any]:
    return {**WELCOME, "to": [f"user{i}@example.com"]}


async def post(client: httpx.AsyncClient, request: dict[str, Any]) -> str:
    response = await client.post("/v1/notifications", json=request)
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


async def post_many(apis: list[Live], count: int) -> list[str]:
    """`count` notifications, each to a recipient of its own, spread over the APIs."""
    ids: list[str] = []
    for first in range(0, count, 25):
        ids += await asyncio.gather(
            *(
                post(apis[i % len(apis)].client, addressed(i))
                for i in range(first, min(first + 25, count))
            )
        )
    return ids


@contextlib.asynccontextmanager
async def two_apis(env: dict[str, str], tmp_path: Path) -> AsyncIterator[list[Live]]:
    ports = free_ports(2)
    async with (
        running(uvicorn_command(ports[0]), env=env, port=ports[0], log=tmp_path / "api-a") as a,
        running(uvicorn_command(ports[1]), env=env, port=ports[1], log=tmp_path / "api-b") as b,
    ):
        yield [a, b]


def role_env(tmp_path: Path, smtp: SmtpServer, **extra: str) -> dict[str, str]:
    return service_env(tmp_path, smtp.port, DELIVERY="off", POLL_INTERVAL="0.1", **extra)


async def test_two_apis_and_two_workers_deliver_300_each_exactly_once(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.stalls["DATA"] = 0.02  # sends take a moment, as with a real relay
    env = role_env(tmp_path, smtp, DELIVERY_CONCURRENCY="4")
    async with (
        two_apis(env, tmp_path) as apis,
        worker_running(
            env={**env, "SMTP_LOCAL_HOSTNAME": "worker-a.test"}, log=tmp_path / "worker-a"
        ),
        worker_running(
            env={**env, "SMTP_LOCAL_HOSTNAME": "worker-b.test"}, log=tmp_path / "worker-b"
        ),
    ):
        ids = await post_many(apis, 300)
        await all_sent(database(tmp_path), 300, within=30)

    assert len(set(ids)) == 300
    assert len(smtp.messages) == 300
    assert set(smtp.copies().values()) == {1}
    recipients = Counter(rcpt for m in smtp.messages for rcpt in m.rcpt_tos)
    assert recipients == Counter({f"user{i}@example.com": 1 for i in range(300)})
    senders = Counter(m.client for m in smtp.messages)
    # the APIs sent nothing (DELIVERY=off), both workers sent some
    assert set(senders) == {"worker-a.test", "worker-b.test"}, senders


async def test_kill_9_of_a_worker_mid_send_duplicates_only_its_sends_in_flight(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # The doomed worker's relay keeps each message but never answers it: its sends are in
    # flight (the mail is at the relay, the outcome unknown) when it dies. Its claims come back
    # after its lease, 12 x SMTP_TIMEOUT = 12 s.
    smtp.behaviour.client_stalls["doomed.test"] = {"AFTER_DATA": 60}
    env = role_env(tmp_path, smtp, DELIVERY_CONCURRENCY="4", SMTP_TIMEOUT="1")
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
            await all_sent(database(tmp_path), count, within=25)

    copies = smtp.copies()
    # every notification once, under one Message-ID; those in flight in the dead worker twice,
    # under the same Message-ID (the second copy from the survivor), and no other
    assert len(copies) == count == len(set(ids))
    assert {mid for mid, n in copies.items() if n > 1} == in_flight
    assert {copies[mid] for mid in in_flight} == {2}
    assert len(smtp.messages) == count + len(in_flight)
    by_client = Counter(m.client for m in smtp.messages)
    assert by_client == {"doomed.test": len(in_flight), "survivor.test": count}


async def test_sigterm_lets_a_workers_sends_in_flight_finish_then_exits_0(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.stalls["AFTER_DATA"] = 1.0  # the relay answers each message after a second
    env = role_env(tmp_path, smtp, DELIVERY_CONCURRENCY="2", SHUTDOWN_GRACE_SECONDS="10")
    db = database(tmp_path)
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
        assert statuses(db) == {"sent": 2, "queued": 2}
        sent = {f"user{i}@example.com" for i, n in enumerate(ids) if status_of(db, n) == "sent"}
        assert sent == in_flight
        # the rest wait in the store for the next worker
        smtp.behaviour.stalls.clear()
        async with worker_running(env=env, log=tmp_path / "next"):
            await all_sent(db, 4, within=10)
    assert sorted(smtp.copies().values()) == [1, 1, 1, 1]


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


async def test_a_worker_sends_a_scheduled_notification_after_its_time_and_never_a_cancelled_one(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    env = role_env(tmp_path, smtp)
    port = free_ports(1)[0]
    now = time.time()
    async with (
        running(uvicorn_command(port), env=env, port=port, log=tmp_path / "api") as api,
        worker_running(env=env, log=tmp_path / "worker"),
    ):
        # the cancelled one falls due first: had it not been cancelled, it would go first
        cancelled = await post(api.client, {**addressed(1), "send_at": rfc3339(now + 1.0)})
        scheduled = await post(api.client, {**addressed(2), "send_at": rfc3339(now + 1.5)})
        response = await api.client.post(f"/v1/notifications/{cancelled}/cancel")
        assert response.status_code == 200, response.text
        assert smtp.messages == []
        await wait_for(lambda: status_of(database(tmp_path), scheduled) == "sent", within=10)
        assert status_of(database(tmp_path), cancelled) == "cancelled"
    [message] = smtp.messages
    assert message.rcpt_tos == ["user2@example.com"]
    assert message.at >= now + 1.5


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
