"""Safe to expose: callers, limits, header injection, template names, context as data."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.processes import free_port
from tests.conftest import WELCOME
from tests.live import running, service_env, uvicorn_command
from tests.redis_server import shared_redis, unique_prefix
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
async def test_context_too_big_or_too_deep_is_422_for_sending_and_preview_alike(
    limited: httpx.AsyncClient, context: dict[str, Any], message: str
) -> None:
    # a preview renders the context as sending would: unbounded, one request could build an
    # answer of any size (a 15 MiB name of "<" became a 94 MB HTML-escaped answer)
    for path, body in [
        ("/v1/notifications", {**WELCOME, "context": context}),
        ("/v1/templates/welcome/preview", {"context": context}),
    ]:
        response = await limited.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        error = response.json()["detail"][0]
        assert error["loc"] == ["body", "context"] and message in error["msg"], path


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


async def test_a_batch_larger_than_the_whole_rate_limit_is_422_naming_it(
    keyed: httpx.AsyncClient,
) -> None:
    # RATE_LIMIT=3/minute: four could never pass, a 429 would be a lie
    batch = {"notifications": [WELCOME] * 4}
    response = await keyed.post("/v1/notifications/batch", json=batch, headers=bearer(WEB_KEY))
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "notifications"]
    assert "RATE_LIMIT (3/minute)" in error["msg"] and "at most 3" in error["msg"]
    whole = {"notifications": [WELCOME] * 3}
    response = await keyed.post("/v1/notifications/batch", json=whole, headers=bearer(OPS_KEY))
    assert response.status_code == 202  # a full bucket pays for a batch of its size


@pytest.mark.parametrize("storage", ["memory", "redis"])
async def test_after_retry_after_the_refused_batch_passes(
    tmp_path: Path, smtp: SmtpServer, storage: str
) -> None:
    """What the property of tests/test_rate_limit.py shows with a moved clock, in real time."""
    batch = {"notifications": [WELCOME] * 10}
    where = await shared_redis() if storage == "redis" else "memory://"
    async with service(
        tmp_path,
        smtp,
        rate_limit="10/second",
        rate_limit_storage=where,
        rate_limit_key_prefix=unique_prefix(),
    ) as client:
        assert (await client.post("/v1/notifications/batch", json=batch)).status_code == 202
        refused = await client.post("/v1/notifications/batch", json=batch)
        assert refused.status_code == 429
        await asyncio.sleep(int(refused.headers["retry-after"]))  # the promise under test
        assert (await client.post("/v1/notifications/batch", json=batch)).status_code == 202


async def test_every_v1_route_spends_the_rate_limit(tmp_path: Path, smtp: SmtpServer) -> None:
    keys = ",".join(f"k{i}:key-number-{i}" for i in range(20))
    async with service(tmp_path, smtp, api_keys=keys, rate_limit="1/hour") as client:
        schema = (await client.get("/openapi.json")).json()
        routes = [
            (method.upper(), re.sub(r"\{[^}]+\}", "welcome", path))
            for path, operations in schema["paths"].items()
            if path.startswith("/v1/")
            for method in operations
        ]
        for i, (method, path) in enumerate(routes):
            headers = bearer(f"key-number-{i}")
            first = await client.request(method, path, json={"context": {}}, headers=headers)
            assert first.status_code != 429, (method, path)
            again = await client.request(method, path, json={"context": {}}, headers=headers)
            assert again.status_code == 429, (method, path, again.text)
            assert int(again.headers["retry-after"]) > 3000


async def test_no_body_of_an_unauthenticated_request_is_read_on_any_v1_route(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """Headers only, announcing 10 MB (or chunks that never come): the 401 arrives anyway,
    from a real server, on every /v1 route of the OpenAPI document."""
    port = free_port()
    # two failed authentications per route: more than AUTH_FAILURE_LIMIT's default lets pass
    env = service_env(
        tmp_path, smtp.port, API_KEYS=f"web:{WEB_KEY}", AUTH_FAILURE_LIMIT="1000/minute"
    )
    async with running(uvicorn_command(port), env=env, port=port, log=tmp_path / "log") as live:
        schema = (await live.client.get("/openapi.json")).json()
        routes = [
            (method.upper(), re.sub(r"\{[^}]+\}", "welcome", path))
            for path, operations in schema["paths"].items()
            if path.startswith("/v1/")
            for method in operations
        ]
        assert len(routes) >= 7
        for (method, path), framing in itertools.product(
            routes, ["Content-Length: 10000000", "Transfer-Encoding: chunked"]
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer wrong-key-1\r\n"
                f"Content-Type: application/json\r\n{framing}\r\n\r\n"
            )
            writer.write(head.encode())
            await writer.drain()
            try:
                status_line = await asyncio.wait_for(reader.readline(), timeout=5)
            finally:
                writer.close()
            assert status_line.startswith(b"HTTP/1.1 401 "), (method, path, framing, status_line)
