"""Delivery against a misbehaving real SMTP server: deferrals, retries, refusals, pauses."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.conftest import BOTH_BACKENDS, WELCOME, make_settings, wait_for
from tests.smtp_server import SmtpServer


@asynccontextmanager
async def service(
    tmp_path: Path, smtp: SmtpServer, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_settings(tmp_path, smtp.port, **settings))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def accept(client: httpx.AsyncClient, request: dict[str, Any] | None = None) -> str:
    response = await client.post("/v1/notifications", json=request or WELCOME)
    assert response.status_code == 202, response.text
    return str(response.headers["location"])


async def shown(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(location)).json()
    return body


async def reaches(
    client: httpx.AsyncClient, location: str, status: str, within: float = 10
) -> dict[str, Any]:
    async def check() -> bool:
        return bool((await shown(client, location))["status"] == status)

    await wait_for(check, within=within)
    return await shown(client, location)


async def attempted(client: httpx.AsyncClient, location: str, count: int = 1) -> dict[str, Any]:
    async def check() -> bool:
        return len((await shown(client, location))["attempts"]) >= count

    await wait_for(check)
    return await shown(client, location)


@pytest.mark.parametrize("stage", ["CONNECT", "MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize("reply", ["421 4.3.2 shutting down", "451 4.3.0 try again later"])
async def test_temporary_reply_defers_then_delivers(
    tmp_path: Path, smtp: SmtpServer, stage: str, reply: str
) -> None:
    smtp.behaviour.replies[stage] = reply
    async with service(tmp_path, smtp) as client:
        location = await accept(client)
        first = await attempted(client, location)
        assert first["attempts"][0]["outcome"] == "deferred"
        assert first["attempts"][0]["smtp_code"] == int(reply[:3])
        assert reply[4:] in first["last_error"]
        assert smtp.messages == []

        smtp.behaviour.replies.clear()
        done = await reaches(client, location, "sent")
    assert [a["outcome"] for a in done["attempts"]][-1] == "sent"
    assert done["attempts"][0]["outcome"] == "deferred"
    assert done["last_error"] is None
    assert len(smtp.messages) == 1


@BOTH_BACKENDS
async def test_server_down_then_up_delivers_every_one_exactly_once(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    await smtp.stop()
    async with service(tmp_path, smtp, database_url=database_url) as client:
        first = await accept(client)
        assert "connection failed" in (await attempted(client, first))["last_error"]

        async def unreachable() -> bool:
            ready = (await client.get("/readyz")).json()["checks"]
            return "connection failed" in ready["smtp"]

        await wait_for(unreachable)
        # While the server is away the others are not tried one by one: no attempt is burnt.
        others = [await accept(client) for _ in range(19)]
        assert {(await shown(client, o))["status"] for o in others} == {"queued"}

        await smtp.start(smtp.port)
        for location in [first, *others]:
            await reaches(client, location, "sent")
        assert [len((await shown(client, o))["attempts"]) for o in others] == [1] * 19
    assert len(smtp.messages) == 20
    assert set(smtp.copies().values()) == {1}


async def test_connection_dropped_mid_data_is_retried(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.behaviour.drop_at = "DATA"
    async with service(tmp_path, smtp) as client:
        location = await accept(client)
        assert (await attempted(client, location))["attempts"][0]["outcome"] == "deferred"
        smtp.behaviour.drop_at = None
        await reaches(client, location, "sent")
    assert len(smtp.messages) == 1


async def test_server_stalling_past_the_timeout_is_retried(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.stalls["MAIL"] = 1.0
    async with service(tmp_path, smtp, smtp_timeout=0.2) as client:
        location = await accept(client)
        first = await attempted(client, location)
        assert "timed out" in first["last_error"]
        smtp.behaviour.stalls.clear()
        await reaches(client, location, "sent")
    assert len(smtp.messages) == 1


async def test_reply_lost_after_the_final_dot_gives_at_most_one_extra_copy(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.stalls["AFTER_DATA"] = 1.0
    async with service(tmp_path, smtp, smtp_timeout=0.2) as client:
        location = await accept(client)
        await attempted(client, location)
        smtp.behaviour.stalls.clear()
        done = await reaches(client, location, "sent")
    assert 1 <= len(smtp.messages) <= 2
    assert list(smtp.copies()) == [done["message_id"]]


@BOTH_BACKENDS
async def test_one_refused_recipient_of_three_is_recorded_and_others_receive_it(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = "550 5.1.1 no such user"
    request = {**WELCOME, "to": ["ada@example.com", "bob@example.com"], "cc": ["cy@example.com"]}
    async with service(tmp_path, smtp, database_url=database_url) as client:
        done = await reaches(client, await accept(client, request), "sent")
    assert smtp.messages[0].rcpt_tos == ["ada@example.com", "cy@example.com"]
    assert done["refused_recipients"] == [
        {"email": "bob@example.com", "code": 550, "message": "5.1.1 no such user"}
    ]
    assert len(done["attempts"]) == 1


async def test_a_sent_notification_keeps_the_success_reply_and_the_refusals_apart(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = "550 5.1.1 no such user"
    request = {**WELCOME, "to": ["ada@example.com", "bob@example.com"]}
    async with service(tmp_path, smtp) as client:
        done = await reaches(client, await accept(client, request), "sent")
    [attempt] = done["attempts"]
    assert (attempt["smtp_code"], attempt["detail"]) == (250, "Message accepted for delivery")
    assert done["last_error"] == "refused: bob@example.com: 550 5.1.1 no such user"
    assert done["recipients_status"] == [
        {
            "email": "ada@example.com",
            "status": "delivered",
            "code": None,
            "message": None,
            "reason": None,
        },
        {
            "email": "bob@example.com",
            "status": "refused",
            "code": 550,
            "message": "5.1.1 no such user",
            "reason": None,
        },
    ]


async def test_a_recipient_who_got_it_is_shown_delivered_when_the_others_gave_up(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = "450 4.2.1 mailbox busy"  # for ever
    smtp.behaviour.refuse["cy@example.com"] = "550 5.1.1 no such user"
    request = {**WELCOME, "to": ["ada@example.com", "bob@example.com"], "bcc": ["cy@example.com"]}
    async with service(tmp_path, smtp, max_attempts=3) as client:
        location = await accept(client, request)
        first = await attempted(client, location)
        assert [(r["email"], r["status"]) for r in first["recipients_status"]] == [
            ("ada@example.com", "delivered"),
            ("bob@example.com", "pending"),
            ("cy@example.com", "refused"),
        ]
        done = await reaches(client, location, "failed")
    assert [(r["email"], r["status"]) for r in done["recipients_status"]] == [
        ("ada@example.com", "delivered"),
        ("bob@example.com", "failed"),
        ("cy@example.com", "refused"),
    ]
    assert done["last_error"] == (
        "gave up after 3 attempts: recipients deferred: bob@example.com: 450 4.2.1 mailbox busy"
    )
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.com"]]


async def test_a_locked_database_after_the_250_delays_the_record_and_sends_once(
    tmp_path: Path, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server keeps the message, then answers 250 a moment later; meanwhile another
    # program takes the database's write lock, so the outcome cannot be recorded at first.
    smtp.behaviour.stalls["AFTER_DATA"] = 0.3
    # Scheduled a moment ahead, so the delivery loop sends it: a queued one may be sent by the
    # accepting request's background task, which the in-process client waits for, lock or not.
    soon = (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat()
    async with service(tmp_path, smtp, database_busy_timeout=0.1) as client:
        location = await accept(client, {**WELCOME, "send_at": soon})
        await wait_for(lambda: len(smtp.messages) == 1)
        blocker = sqlite3.connect(tmp_path / "notifications.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            log = ""

            def record_failed() -> bool:
                nonlocal log
                log += capsys.readouterr().err
                return "notification.record_retry" in log or "attempt_crashed" in log

            await wait_for(record_failed)
        finally:
            blocker.rollback()
            blocker.close()
        smtp.behaviour.stalls.clear()
        done = await reaches(client, location, "sent")
        assert smtp.copies() == {done["message_id"]: 1}
        assert [a["outcome"] for a in done["attempts"]] == ["sent"]
        assert (await shown(client, location))["status"] == "sent"


async def test_every_recipient_refused_fails(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.behaviour.refuse["ada@example.com"] = "550 5.1.1 no such user"
    async with service(tmp_path, smtp) as client:
        done = await reaches(client, await accept(client), "failed")
    assert done["attempts"][0]["smtp_code"] == 550
    assert smtp.messages == []


async def test_554_on_data_fails_at_once_without_retry(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.behaviour.replies["DATA"] = "554 5.6.0 message rejected"
    async with service(tmp_path, smtp) as client:
        done = await reaches(client, await accept(client), "failed")
    assert len(done["attempts"]) == 1
    assert done["last_error"] == "554 5.6.0 message rejected"
    assert done["next_attempt_at"] is None


async def test_too_many_recipients_go_in_further_transactions(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.max_recipients = 2
    request = {**WELCOME, "to": [f"user{i}@example.com" for i in range(5)]}
    async with service(tmp_path, smtp) as client:
        done = await reaches(client, await accept(client, request), "sent")
    assert [len(m.rcpt_tos) for m in smtp.messages] == [2, 2, 1]
    assert len(set(smtp.copies())) == 1
    assert len(done["attempts"]) == 1


@BOTH_BACKENDS
async def test_gives_up_after_max_attempts(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    smtp.behaviour.replies["MAIL"] = "451 4.3.0 later"
    async with service(tmp_path, smtp, max_attempts=3, database_url=database_url) as client:
        done = await reaches(client, await accept(client), "failed")
    assert [a["outcome"] for a in done["attempts"]] == ["deferred", "deferred", "failed"]
    assert done["last_error"].startswith("gave up after 3 attempts: 451")


async def test_gives_up_after_max_age(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.behaviour.replies["MAIL"] = "451 4.3.0 later"
    async with service(tmp_path, smtp, max_age=0.3) as client:
        done = await reaches(client, await accept(client), "failed")
    assert "MAX_AGE" in done["last_error"]


async def test_auth_refused_pauses_sending_without_burning_attempts(
    tmp_path: Path,
) -> None:
    smtp = await SmtpServer(credentials=("mailer", "new-password")).start()
    try:
        settings = {"smtp_username": "mailer", "smtp_password": "old-password"}
        async with service(tmp_path, smtp, **settings) as client:
            location = await accept(client)

            async def paused() -> bool:
                delivery = (await client.get("/readyz")).json()["checks"]["delivery"]
                return "authentication refused" in delivery

            await wait_for(paused)
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
            still = await shown(client, location)
            assert (still["status"], still["attempts"]) == ("queued", [])

            smtp.credentials = ("mailer", "old-password")  # the relay is fixed
            done = await reaches(client, location, "sent")
            assert len(done["attempts"]) == 1
            assert (await client.get("/readyz")).json()["status"] == "ready"
    finally:
        await smtp.stop()


async def test_a_poison_notification_fails_while_others_flow(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    templates = tmp_path / "templates"
    (templates / "greeting").mkdir(parents=True)
    (templates / "greeting" / "subject.txt").write_text("Hi {{ user.name }}")
    (templates / "greeting" / "body.html").write_text("<p>Hi</p>")
    poison = {"template": "greeting", "to": ["a@example.com"], "context": {"user": "x"}}
    good = {"template": "greeting", "to": ["a@example.com"], "context": {"user": {"name": "A"}}}
    async with service(tmp_path, smtp, templates_dir=templates) as client:
        bad = await accept(client, poison)
        fine = [await accept(client, good) for _ in range(3)]
        assert "failed to render" in (await reaches(client, bad, "failed"))["last_error"]
        for location in fine:
            await reaches(client, location, "sent")
    assert len(smtp.messages) == 3
