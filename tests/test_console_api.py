"""The JSON API under the console: retry a failed notification, download its message as sent,
and each attempt's detail per recipient; against a real SMTP server, on both databases."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path
from typing import Any

from tests.conftest import BOTH_BACKENDS, WELCOME, wait_for
from tests.smtp_server import SmtpServer
from tests.test_accepting import rfc3339
from tests.test_delivery import accept, reaches, service
from tests.test_ownership import BILLING, KEYS, WEB

# refused for good, but not as a recipient that does not exist (5.1.x): that would put the
# address on the suppression list, and a retry would then skip it (tests/test_suppression.py)
REFUSED = "550 5.7.1 relaying denied"
LATER = rfc3339(86400)


def retry_path(location: str) -> str:
    return f"{location}/retry"


@BOTH_BACKENDS
async def test_a_failed_notification_retried_after_the_server_stops_refusing_is_sent_again(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    smtp.behaviour.refuse["ada@example.com"] = REFUSED
    async with service(tmp_path, smtp, database_url=database_url) as client:
        location = await accept(client)
        failed = await reaches(client, location, "failed")
        assert smtp.messages == []
        smtp.behaviour.refuse.clear()
        response = await client.post(retry_path(location))
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        assert response.headers["location"] == location
        sent = await reaches(client, location, "sent")
    (received,) = smtp.messages
    assert received.message_id == failed["message_id"] == sent["message_id"]
    first, second = sent["attempts"]
    assert first["outcome"] == "failed" and first["smtp_code"] == 550
    assert first["recipients"] == [
        {
            "email": "ada@example.com",
            "outcome": "refused",
            "code": 550,
            "message": "5.7.1 relaying denied",
        }
    ]
    assert second["outcome"] == "sent" and second["smtp_code"] == 250
    assert second["detail"] and second["duration_ms"] >= 0
    assert second["recipients"] == [
        {"email": "ada@example.com", "outcome": "delivered", "code": None, "message": None}
    ]
    assert sent["recipients_status"][0]["status"] == "delivered"
    assert sent["refused_recipients"] == []


async def test_a_retry_gives_those_who_have_it_nothing_more(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.refuse["bob@example.com"] = "451 4.7.1 greylisted"
    request = {**WELCOME, "to": ["ada@example.com", "bob@example.com"]}
    async with service(tmp_path, smtp, max_attempts=1) as client:
        location = await accept(client, request)
        failed = await reaches(client, location, "failed")
        assert failed["attempts"][0]["recipients"] == [
            {"email": "ada@example.com", "outcome": "delivered", "code": None, "message": None},
            {
                "email": "bob@example.com",
                "outcome": "deferred",
                "code": 451,
                "message": "4.7.1 greylisted",
            },
        ]
        smtp.behaviour.refuse.clear()
        assert (await client.post(retry_path(location))).status_code == 202
        await reaches(client, location, "sent")
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.com"], ["bob@example.com"]]
    assert len({m.message_id for m in smtp.messages}) == 1


@BOTH_BACKENDS
async def test_retry_is_409_naming_the_status_unless_failed(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    async with service(tmp_path, smtp, database_url=database_url) as client:
        sent = await accept(client)
        await reaches(client, sent, "sent")
        scheduled = await accept(client, {**WELCOME, "send_at": LATER})
        cancelled = await accept(client, {**WELCOME, "send_at": LATER})
        assert (await client.post(f"{cancelled}/cancel")).status_code == 200
        for location, status in [
            (sent, "sent"),
            (scheduled, "scheduled"),
            (cancelled, "cancelled"),
        ]:
            response = await client.post(retry_path(location))
            assert response.status_code == 409, response.text
            assert f"is {status}" in response.json()["detail"]
        assert (await client.get(scheduled)).json()["status"] == "scheduled"
    assert len(smtp.messages) == 1


async def test_retrying_another_callers_notification_is_404_like_an_unknown_one(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.behaviour.refuse["ada@example.com"] = REFUSED
    async with service(tmp_path, smtp, api_keys=KEYS) as client:
        response = await client.post("/v1/notifications", json=WELCOME, headers=BILLING)
        location = response.headers["location"]
        unknown = "/v1/notifications/00000000-0000-0000-0000-000000000000"

        async def status() -> str:
            return str((await client.get(location, headers=BILLING)).json()["status"])

        async def failed() -> bool:
            return await status() == "failed"

        await wait_for(failed)
        for path in (f"{location}/retry", f"{unknown}/retry"):
            assert (await client.post(path, headers=WEB)).status_code == 404
        for path in (f"{location}/message", f"{unknown}/message"):
            assert (await client.get(path, headers=WEB)).status_code == 404
        assert await status() == "failed"
        assert (await client.post(f"{location}/retry", headers=BILLING)).status_code == 202


def parsed(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    defects = [*message.defects, *(d for part in message.walk() for d in part.defects)]
    assert defects == []
    return message


@BOTH_BACKENDS
async def test_the_message_download_is_what_the_smtp_server_received(
    tmp_path: Path, smtp: SmtpServer, database_url: str
) -> None:
    request: dict[str, Any] = {
        **WELCOME,
        "cc": ["Grace Hopper <grace@example.com>"],
        "bcc": ["secret-auditor@example.com"],
    }
    async with service(tmp_path, smtp, database_url=database_url) as client:
        location = await accept(client, request)
        await reaches(client, location, "sent")
        response = await client.get(f"{location}/message")
    assert response.status_code == 200
    assert response.headers["content-type"] == "message/rfc822"
    notification_id = location.rsplit("/", 1)[1]
    assert response.headers["content-disposition"] == (
        f'attachment; filename="{notification_id}.eml"'
    )
    (received,) = smtp.messages
    assert "secret-auditor@example.com" in received.rcpt_tos
    assert response.content == received.data
    assert b"secret-auditor" not in response.content
    message = parsed(response.content)
    assert message["Message-ID"] == received.message_id
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/alternative",
        "text/plain",
        "text/html",
    ]


async def test_the_message_before_any_attempt_is_built_as_it_would_be_sent(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    request = {**WELCOME, "send_at": LATER, "bcc": ["hidden@example.com"]}
    async with service(tmp_path, smtp) as client:
        location = await accept(client, request)
        shown = (await client.get(location)).json()
        response = await client.get(f"{location}/message")
    assert response.status_code == 200
    message = parsed(response.content)
    assert message["Message-ID"] == shown["message_id"]
    assert message["To"] == "ada@example.com"
    assert b"hidden@example.com" not in response.content
    assert smtp.messages == []


async def test_retry_needs_the_send_scope_and_the_message_the_read_scope(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nname = "viewer"\nkey = "viewer-secret-123"\nscopes = ["preview"]\n')
    viewer = {"Authorization": "Bearer viewer-secret-123"}
    async with service(tmp_path, smtp, api_keys_file=keys) as client:
        unknown = "/v1/notifications/00000000-0000-0000-0000-000000000000"
        retry = await client.post(f"{unknown}/retry", headers=viewer)
        message = await client.get(f"{unknown}/message", headers=viewer)
    assert retry.status_code == 403 and "'send'" in retry.json()["detail"]
    assert message.status_code == 403 and "'read'" in message.json()["detail"]


async def test_responses_are_json_errors_never_500(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp) as client:
        long_id = "x" * 5000
        for response in (
            await client.post(f"/v1/notifications/{long_id}/retry"),
            await client.get(f"/v1/notifications/{long_id}/message"),
        ):
            assert response.status_code == 404
            assert len(response.text) < 6000
