"""The HTTP contract: what is accepted, what is refused (and then neither stored nor sent)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.conftest import WELCOME, make_settings, wait_for
from tests.smtp_server import SmtpServer


def stored_count(settings: Settings) -> int:
    with sqlite3.connect(settings.database_path) as db:
        count: int = db.execute("SELECT COUNT(*) FROM notifications").fetchone()[0]
    return count


async def test_accepts_with_202_location_and_queued_status(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    response = await client.post("/v1/notifications", json=WELCOME)

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "status", "created_at"}
    assert body["status"] == "queued"
    assert response.headers["location"] == f"/v1/notifications/{body['id']}"


async def test_stored_notification_shows_its_outcome(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    request = {**WELCOME, "tags": ["onboarding"], "metadata": {"user_id": "42"}}
    location = (await client.post("/v1/notifications", json=request)).headers["location"]

    async def sent() -> bool:
        return bool((await client.get(location)).json()["status"] == "sent")

    await wait_for(sent)
    shown = (await client.get(location)).json()
    assert shown["template"] == "welcome"
    assert shown["subject"] == "Welcome aboard, Ada!"
    assert shown["recipients"]["to"] == [{"email": "ada@example.com", "name": None}]
    assert shown["from"] == {"email": "noreply@example.com", "name": "Notifier"}
    assert shown["message_id"] == smtp.messages[0].message["Message-ID"]
    assert [a["outcome"] for a in shown["attempts"]] == ["sent"]
    assert shown["sent_at"] is not None and shown["last_error"] is None
    assert shown["tags"] == ["onboarding"] and shown["metadata"] == {"user_id": "42"}


async def test_unknown_notification_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/notifications/does-not-exist")
    assert response.status_code == 404
    assert "does-not-exist" in response.json()["detail"]


REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown template", {"template": "nope"}, "template", "no template named 'nope'"),
    ("template path", {"template": "../etc/passwd"}, "template", "pattern"),
    ("missing variable", {"context": {"name": "Ada"}}, "context", "action_url"),
    ("bad address", {"to": ["not-an-address"]}, "to", "not a valid email address"),
    ("bad named address", {"to": ["Ada <ada@@example.com>"]}, "to", "not a valid email"),
    ("no recipient", {"to": []}, "to", "at least 1"),
    ("sender not allowed", {"from": "boss@elsewhere.org"}, "from", "ALLOWED_SENDERS"),
    ("CRLF in subject", {"subject": "Hi\r\nBcc: x@evil.org"}, "subject", "CR, LF"),
    ("LF in name", {"to": [{"email": "a@example.com", "name": "A\nBcc: x"}]}, "to", "CR, LF"),
    ("CRLF in header", {"headers": {"X-Tag": "a\r\nBcc: x@evil.org"}}, "headers", "CR, LF"),
    ("non X- header", {"headers": {"Bcc": "x@evil.org"}}, "headers", "must start with X-"),
    ("unknown field", {"priority": "high"}, "priority", "Extra inputs"),
    (
        "too many recipients",
        {"to": [f"user{i}@example.com" for i in range(51)]},
        "to",
        "at most 50",
    ),
]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
async def test_unsendable_request_is_422_naming_the_field_and_nothing_is_stored_or_sent(
    client: httpx.AsyncClient,
    smtp: SmtpServer,
    settings: Settings,
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    response = await client.post("/v1/notifications", json={**WELCOME, **change})

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(field in error["loc"] and message in error["msg"] for error in errors), errors
    assert stored_count(settings) == 0
    assert smtp.messages == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_is_422(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/v1/notifications", content=b"template=welcome", headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert "application/json" in response.json()["detail"][0]["msg"]


async def test_malformed_json_is_422_not_500(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post(
        "/v1/notifications", content=b'{"template": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"
    assert stored_count(settings) == 0


async def test_body_that_is_not_utf8_is_422_too(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/notifications", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_allowed_sender_domain_and_reply_to_are_accepted(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    request = {**WELCOME, "from": "Support <help@example.com>", "reply_to": "desk@example.com"}
    assert (await client.post("/v1/notifications", json=request)).status_code == 202
    await wait_for(lambda: len(smtp.messages) == 1)
    message = smtp.messages[0].message
    assert message["From"] == "Support <help@example.com>"
    assert message["Reply-To"] == "desk@example.com"
    assert smtp.messages[0].mail_from == "help@example.com"


@pytest.fixture
async def keyed_client(tmp_path: Path, smtp: SmtpServer) -> Any:
    application: FastAPI = create_app(
        make_settings(tmp_path, smtp.port, api_keys="k-one-secret, k-two-secret")
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic k-one-secret", "Bearer k-one-secre"])
async def test_missing_or_wrong_key_is_401(
    keyed_client: httpx.AsyncClient, auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth else {}
    response = await keyed_client.post("/v1/notifications", json=WELCOME, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]


async def test_any_configured_key_is_accepted(keyed_client: httpx.AsyncClient) -> None:
    for auth in ("Bearer k-one-secret", "bearer k-two-secret", "Bearer  k-one-secret "):
        response = await keyed_client.post(
            "/v1/notifications", json=WELCOME, headers={"Authorization": auth}
        )
        assert response.status_code == 202


async def test_the_key_is_checked_before_the_body_is_read(keyed_client: httpx.AsyncClient) -> None:
    response = await keyed_client.post(
        "/v1/notifications", content=b'{"template": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


async def test_templates_are_listed_with_their_variables(client: httpx.AsyncClient) -> None:
    templates = {t["name"]: t for t in (await client.get("/v1/templates")).json()}
    assert templates["welcome"]["variables"] == ["action_url", "name"]
    assert templates["password_reset"]["variables"] == ["expires_in_minutes", "name", "reset_url"]
    assert templates["welcome"]["description"]


async def test_preview_renders_without_sending(client: httpx.AsyncClient, smtp: SmtpServer) -> None:
    response = await client.post(
        "/v1/templates/password_reset/preview",
        json={
            "context": {"name": "<Ada>", "reset_url": "https://x.test/r", "expires_in_minutes": 30}
        },
    )
    assert response.status_code == 200
    preview = response.json()
    assert preview["subject"] == "Reset your password"
    assert "&lt;Ada&gt;" in preview["html"] and "<Ada>" not in preview["html"]
    assert "Hi <Ada>," in preview["text"]
    assert "30 minutes" in preview["text"]
    assert smtp.messages == []


async def test_preview_of_unknown_template_is_404_and_missing_variable_422(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/v1/templates/nope/preview", json={})).status_code == 404
    response = await client.post("/v1/templates/welcome/preview", json={"context": {}})
    assert response.status_code == 422
    assert "action_url" in response.json()["detail"][0]["msg"]


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "smtp": "ok", "delivery": "ok"}


async def test_readyz_is_503_with_the_reason_when_smtp_is_down(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    await smtp.stop()
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert "SMTP connection failed" in ready.json()["checks"]["smtp"]


async def test_openapi_has_an_example_for_every_request_body(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            model = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
            assert model.get("examples"), f"{method.upper()} {path} has no example"


async def test_openapi_documents_each_recipients_outcome(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    view = schemas["NotificationView"]["properties"]
    assert "delivered" in view["recipients_status"]["description"]
    assert schemas["RecipientOutcome"]["enum"] == [
        "delivered",
        "refused",
        "pending",
        "failed",
        "cancelled",
    ]
    assert set(schemas["RecipientStatus"]["properties"]) == {"email", "status", "code", "message"}
