"""Safe to expose: callers, limits, header injection, template names, context as data."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import WELCOME
from tests.smtp_server import SmtpServer
from tests.test_api import stored_count
from tests.test_delivery import accept, reaches, service

OPS_KEY = "ops-secret-key"
WEB_KEY = "web-secret-key"


@pytest.fixture
async def keyed(tmp_path: Path, smtp: SmtpServer) -> AsyncIterator[httpx.AsyncClient]:
    digest = hashlib.sha256(OPS_KEY.encode()).hexdigest()
    keys = f"ops:sha256:{digest},web:{WEB_KEY}"
    async with service(tmp_path, smtp, api_keys=keys, rate_limit="3/minute") as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_callers_are_named_by_their_key_hashed_or_not(keyed: httpx.AsyncClient) -> None:
    for key, name in ((OPS_KEY, "ops"), (WEB_KEY, "web")):
        response = await keyed.post("/v1/notifications", json=WELCOME, headers=bearer(key))
        assert response.status_code == 202
        shown = await keyed.get(response.headers["location"], headers=bearer(key))
        assert shown.json()["caller"] == name


async def test_rate_limit_per_key_answers_429_with_retry_after(keyed: httpx.AsyncClient) -> None:
    codes = [
        (await keyed.post("/v1/notifications", json=WELCOME, headers=bearer(WEB_KEY))).status_code
        for _ in range(4)
    ]
    assert codes == [202, 202, 202, 429]
    refused = await keyed.get("/v1/templates", headers=bearer(WEB_KEY))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "'web'" in refused.json()["detail"]
    other = await keyed.post("/v1/notifications", json=WELCOME, headers=bearer(OPS_KEY))
    assert other.status_code == 202  # another key has its own bucket


async def test_a_batch_spends_one_unit_per_notification(keyed: httpx.AsyncClient) -> None:
    batch = {"notifications": [WELCOME, WELCOME, WELCOME]}
    assert (
        await keyed.post("/v1/notifications/batch", json=batch, headers=bearer(WEB_KEY))
    ).is_success
    response = await keyed.post("/v1/notifications", json=WELCOME, headers=bearer(WEB_KEY))
    assert response.status_code == 429


@pytest.fixture
async def limited(tmp_path: Path, smtp: SmtpServer) -> AsyncIterator[httpx.AsyncClient]:
    settings = {
        "max_body_bytes": 4096,
        "max_context_bytes": 200,
        "max_context_depth": 3,
        "max_batch": 2,
    }
    async with service(tmp_path, smtp, **settings) as client:
        yield client


async def test_body_over_the_limit_is_413(limited: httpx.AsyncClient) -> None:
    big = {**WELCOME, "metadata": {"note": "x" * 400}, "tags": ["t"] * 20}
    big["context"] = {**WELCOME["context"], "padding": "y" * 5000}
    response = await limited.post("/v1/notifications", json=big)
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["detail"]


async def test_body_over_the_limit_without_a_length_is_413(limited: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"template": "welcome", "padding": "'
        for _ in range(10):
            yield b"z" * 1000
        yield b'"}'

    response = await limited.post(
        "/v1/notifications", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"name": "Ada", "action_url": "u", "blob": "x" * 300}, "MAX_CONTEXT_BYTES"),
        ({"name": "Ada", "action_url": "u", "deep": {"a": {"b": {"c": 1}}}}, "MAX_CONTEXT_DEPTH"),
    ],
)
async def test_context_too_big_or_too_deep_is_422(
    limited: httpx.AsyncClient, context: dict[str, Any], message: str
) -> None:
    response = await limited.post("/v1/notifications", json={**WELCOME, "context": context})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "context"] and message in error["msg"]


async def test_batch_over_max_batch_is_422(limited: httpx.AsyncClient) -> None:
    batch = {"notifications": [WELCOME] * 3}
    response = await limited.post("/v1/notifications/batch", json=batch)
    assert response.status_code == 422
    assert "MAX_BATCH" in response.json()["detail"][0]["msg"]


INJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("address", {"to": ["ada@example.com\r\nBcc: evil@evil.test"]}, "to"),
    ("name", {"to": [{"email": "ada@example.com", "name": "Ada\r\nBcc: evil@evil.test"}]}, "to"),
    ("name NUL", {"to": [{"email": "ada@example.com", "name": "Ada\x00"}]}, "to"),
    ("subject", {"subject": "Hi\nBcc: evil@evil.test"}, "subject"),
    ("subject NUL", {"subject": "Hi\x00there"}, "subject"),
    ("header value", {"headers": {"X-Tag": "a\r\nBcc: evil@evil.test"}}, "headers"),
    ("header name", {"headers": {"X-Tag\r\nBcc": "evil@evil.test"}}, "headers"),
    ("reply-to", {"reply_to": "desk@example.com\nBcc: evil@evil.test"}, "reply_to"),
    ("from", {"from": "Boss\r\n <help@example.com>"}, "from"),
]


@pytest.mark.parametrize(
    ("change", "field"), [c[1:] for c in INJECTIONS], ids=[c[0] for c in INJECTIONS]
)
async def test_header_injection_in_a_field_is_refused(
    client: httpx.AsyncClient, smtp: SmtpServer, settings: Any, change: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/notifications", json={**WELCOME, **change})
    assert response.status_code == 422
    assert any(field in e["loc"] for e in response.json()["detail"])
    assert stored_count(settings) == 0 and smtp.messages == []


async def test_injection_through_a_context_value_in_the_subject_is_folded_harmlessly(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    context = {"name": "Ada\r\nBcc: evil@evil.test\r\n\r\nbody", "action_url": "u"}
    await reaches(client, await accept(client, {**WELCOME, "context": context}), "sent")
    received = smtp.messages[0]
    assert received.rcpt_tos == ["ada@example.com"]
    message = received.message
    assert message["Bcc"] is None
    assert message["Subject"] == "Welcome aboard, Ada Bcc: evil@evil.test body!"


@pytest.mark.parametrize(
    "name", ["../welcome", "/etc/passwd", "welcome/../../x", "nope", "Welcome"]
)
async def test_template_names_are_names_not_paths(
    client: httpx.AsyncClient, settings: Any, name: str
) -> None:
    response = await client.post("/v1/notifications", json={**WELCOME, "template": name})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "template"]
    assert stored_count(settings) == 0


@pytest.mark.parametrize("path", ["..%2F..%2Fetc", "%2Fetc%2Fpasswd", "nope"])
async def test_preview_of_a_path_is_refused_without_touching_files(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(f"/v1/templates/{path}/preview", json={"context": {}})
    assert response.status_code in (404, 422)


async def test_context_values_arrive_literally_and_escaped_in_html(
    client: httpx.AsyncClient, smtp: SmtpServer
) -> None:
    context = {"name": "{{ 7*7 }} <script>alert(1)</script>", "action_url": "https://x.test/?a=<b>"}
    await reaches(client, await accept(client, {**WELCOME, "context": context}), "sent")
    message = smtp.messages[0].message
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    assert "{{ 7*7 }} <script>alert(1)</script>" in text.get_content()
    assert "{{ 7*7 }} &lt;script&gt;alert(1)&lt;/script&gt;" in html.get_content()
    assert "<script>" not in html.get_content() and "49" not in html.get_content()
