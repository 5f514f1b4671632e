"""The service on PostgreSQL while its database goes away and comes back: every request answers
within DATABASE_TIMEOUT (503 with Retry-After, never a 202 and never a hang), and once the
database is back the service carries on by itself, sending everything it accepted before, once.

The database is a server of the test's own, stopped (`pg_ctl stop`: connections refused) or
frozen (SIGSTOP: connections open, nothing answers). A frozen server still holds what it was
sent and may run it when it wakes: a 503 after a timeout does not say "not stored", and the
retry with the same Idempotency-Key is what makes it safe."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.errors import StoreUnavailable
from tests.conftest import WELCOME, wait_for
from tests.smtp_server import SmtpServer
from tests.test_delivery import accept, reaches, service

if TYPE_CHECKING:
    from tests.postgres import PrivatePostgres

TIMEOUT = 1.0  # DATABASE_TIMEOUT
# what an answer may take beyond DATABASE_TIMEOUT on a loaded machine
SLACK = 1.0


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def answered_in_time(
    request: Callable[[], Awaitable[httpx.Response]], status: int = 503
) -> httpx.Response:
    started = time.monotonic()
    response = await request()
    assert time.monotonic() - started < TIMEOUT + SLACK
    assert response.status_code == status, response.text
    return response


REFUSED = {**WELCOME, "to": ["refused@example.com"]}
KEYED = {**WELCOME, "to": ["keyed@example.com"]}
KEY = {"Idempotency-Key": "sent-while-the-database-was-away"}


async def refuses_everything_in_time(client: httpx.AsyncClient) -> None:
    """Every kind of request meets the missing database with a 503 in time."""
    for request in (
        lambda: client.post("/v1/notifications", json=REFUSED),
        lambda: client.post("/v1/notifications", json=KEYED, headers=KEY),
        lambda: client.post("/v1/notifications/batch", json={"notifications": [REFUSED]}),
        lambda: client.get("/v1/notifications"),
        lambda: client.post("/v1/notifications/some-id/cancel"),
    ):
        response = await answered_in_time(request)
        assert int(response.headers["retry-after"]) >= 1
    ready = await answered_in_time(lambda: client.get("/readyz"))
    assert ready.json()["status"] == "not ready"
    assert "PostgreSQL" in ready.json()["checks"]["database"]


def postgres_service(
    tmp_path: Path, smtp: SmtpServer, server: PrivatePostgres, **settings: Any
) -> Any:
    return service(tmp_path, smtp, database_url=server.url, database_timeout=TIMEOUT, **settings)


async def test_a_stopped_database_gets_503s_in_time_and_everything_accepted_before_goes_out(
    tmp_path: Path,
    smtp: SmtpServer,
    private_postgres: PrivatePostgres,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The server keeps each message and answers 250 only after the database has gone: their
    # outcome cannot be recorded until it is back, and must not be sent again meanwhile.
    smtp.behaviour.stalls["AFTER_DATA"] = 3.0
    async with postgres_service(tmp_path, smtp, private_postgres) as client:
        # scheduled a moment ahead so the delivery loop sends them (a queued one is sent by
        # the accepting request's background task, which the in-process client waits for)
        in_flight = [
            await accept(
                client, {**WELCOME, "to": [f"sending{i}@example.com"], "send_at": soon(0.2)}
            )
            for i in range(3)
        ]
        due_later = [
            await accept(client, {**WELCOME, "to": [f"later{i}@example.com"], "send_at": soon(1)})
            for i in range(3)
        ]
        await reaches(client, in_flight[-1], "sending")
        await private_postgres.stop()

        await refuses_everything_in_time(client)
        # the server's 250s came while the database was away: their records wait for it
        log = ""

        def every_record_waits() -> bool:
            nonlocal log
            log += capsys.readouterr().err
            waiting = {
                line.split(" id=")[1].split()[0]
                for line in log.splitlines()
                if "notification.record_retry" in line
            }
            return waiting >= {location.rsplit("/", 1)[1] for location in in_flight}

        await wait_for(every_record_waits)

        await private_postgres.start()
        for location in [*in_flight, *due_later]:
            done = await reaches(client, location, "sent", within=30)
            assert [a["outcome"] for a in done["attempts"]] == ["sent"]
    received = sorted(rcpt for m in smtp.messages for rcpt in m.rcpt_tos)
    assert received == sorted(
        [
            *(f"sending{i}@example.com" for i in range(3)),
            *(f"later{i}@example.com" for i in range(3)),
        ]
    )
    assert set(smtp.copies().values()) == {1}


async def test_a_database_that_stops_answering_gets_503s_in_time_then_the_service_recovers(
    tmp_path: Path, smtp: SmtpServer, private_postgres: PrivatePostgres
) -> None:
    # A claim the worker sent while the server was frozen may run when it thaws, after the
    # worker gave up waiting: that notification waits out its lease (12 x SMTP_TIMEOUT) before
    # it is claimed again. A short SMTP_TIMEOUT keeps that wait inside the test's.
    async with postgres_service(tmp_path, smtp, private_postgres, smtp_timeout=2) as client:
        before = await accept(client, {**WELCOME, "send_at": soon(0.5)})
        await client.get("/v1/notifications")  # the pool holds open connections now
        private_postgres.freeze()
        try:
            await refuses_everything_in_time(client)
        finally:
            private_postgres.thaw()
        after = await accept(client)  # no restart: the store replaced the connections it cut
        retried = await client.post("/v1/notifications", json=KEYED, headers=KEY)
        assert retried.status_code == 202
        for location in (before, after, retried.headers["location"]):
            await reaches(client, location, "sent", within=45)
    copies = Counter(rcpt for m in smtp.messages for rcpt in m.rcpt_tos)
    assert copies["ada@example.com"] == 2 and copies["keyed@example.com"] == 1
    assert set(smtp.copies().values()) == {1}


async def test_a_database_unreachable_at_start_stops_the_start_naming_database_url(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    from tests.postgres import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/notifier"
    with pytest.raises(StoreUnavailable, match=r"DATABASE_URL.*ConnectionRefused"):
        async with service(tmp_path, smtp, database_url=url, database_timeout=TIMEOUT):
            pass
