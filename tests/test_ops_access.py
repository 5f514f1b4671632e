"""Who may look inside: /metrics behind METRICS_TOKEN (when set), /readyz in status words for
anyone and with hosts, ports and SMTP replies only for that token or an admin key."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from app.api.api_keys import ApiKey
from app.api.callers import Caller, Scope
from app.api.ops_access import token_matches
from bench.processes import free_port
from tests.conftest import WELCOME, wait_for
from tests.live import read, running, service_env, uvicorn_command
from tests.smtp_server import SmtpServer
from tests.test_auth_throttle import bearer
from tests.test_delivery import service
from tests.test_observability import sample

TOKEN = "scrape-token-0123456789abcdef"
ADMIN_KEY = "ops-admin-key-1"
WEB_KEY = "web-plain-key-1"
WRONG = "guessed-key-0000"


def keys() -> list[ApiKey]:
    """An admin caller and an ordinary one (built here: API_KEYS gives no scopes yet)."""
    return [
        ApiKey(caller=Caller("ops", frozenset(Scope)), digest=_digest(ADMIN_KEY)),
        ApiKey(caller=Caller("web"), digest=_digest(WEB_KEY)),
    ]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def test_metrics_need_the_token_when_it_is_set(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp, metrics_token=TOKEN, api_keys=keys()) as client:
        for headers in (
            {},
            bearer(TOKEN[:-1]),
            bearer(TOKEN + "0"),
            bearer(ADMIN_KEY),  # an API key, even an admin's, is not the scrapers' token
            {"Authorization": f"Basic {TOKEN}"},
        ):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "METRICS_TOKEN" in refused.json()["detail"]
            assert TOKEN not in refused.text
        allowed = await client.get("/metrics", headers=bearer(TOKEN))
    assert allowed.status_code == 200
    assert sample(allowed.text, "notifier_http_requests_total", route="/metrics", status="401") == 5
    assert sample(allowed.text, "notifier_auth_failures_total", outcome="refused") == 5


async def test_metrics_stay_open_without_a_token(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp, api_keys=keys()) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/metrics", headers=bearer(WRONG))).status_code == 200


async def test_wrong_metrics_tokens_are_throttled_but_the_right_one_passes(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    settings = {"metrics_token": TOKEN, "auth_failure_limit": "2/minute"}
    async with service(tmp_path, smtp, **settings) as client:
        codes = [(await client.get("/metrics", headers=bearer(WRONG))).status_code for _ in "abc"]
        assert codes == [401, 401, 429]
        throttled = await client.get("/metrics")
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
        assert (await client.get("/metrics", headers=bearer(TOKEN))).status_code == 200


@given(expected=st.text(min_size=1), offered=st.text())
def test_a_token_matches_only_itself(expected: str, offered: str) -> None:
    assert token_matches(SecretStr(expected), offered) == (offered == expected)
    assert token_matches(SecretStr(expected), expected)
    assert not token_matches(SecretStr(expected), None)


async def checks_of(client: httpx.AsyncClient, key: str | None = None) -> httpx.Response:
    return await client.get("/readyz", headers=bearer(key) if key else {})


async def test_readyz_tells_strangers_status_words_and_insiders_the_reasons(tmp_path: Path) -> None:
    smtp = await SmtpServer(credentials=("mailer", "new-password")).start()
    settings = {
        "api_keys": keys(),
        "metrics_token": TOKEN,
        "smtp_username": "mailer",
        "smtp_password": "old-password",
    }
    try:
        async with service(tmp_path, smtp, **settings) as client:

            async def paused() -> bool:
                return "paused" in (await checks_of(client, ADMIN_KEY)).json()["checks"]["delivery"]

            await wait_for(paused)
            words = {
                "status": "degraded",
                "checks": {"database": "ok", "smtp": "failing", "delivery": "paused"},
            }
            for key in (None, WEB_KEY, WRONG):
                short = await checks_of(client, key)
                assert (short.status_code, short.json()) == (200, words), key
                assert str(smtp.port) not in short.text and "535" not in short.text
            for key in (ADMIN_KEY, TOKEN):
                full = await checks_of(client, key)
                assert full.status_code == 200
                assert full.json()["status"] == "degraded"
                assert "535" in full.json()["checks"]["smtp"]
                assert full.json()["checks"]["delivery"].startswith("paused: ")
                assert "smtp_last_contact" in full.json()
            metrics = (await client.get("/metrics", headers=bearer(TOKEN))).text
    finally:
        await smtp.stop()
    # the wrong key was a failed authentication; no key at all is just a probe
    assert sample(metrics, "notifier_auth_failures_total", outcome="refused") == 1


async def test_readyz_is_503_in_words_too_when_the_database_is_unusable(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with service(tmp_path, smtp, api_keys=keys()) as client:

        async def ready() -> bool:
            return bool((await checks_of(client)).json()["status"] == "ready")

        await wait_for(ready)
        assert (await checks_of(client)).json()["checks"] == {
            "database": "ok",
            "smtp": "ok",
            "delivery": "ok",
        }
        with sqlite3.connect(tmp_path / "notifications.db", timeout=5) as other:
            other.execute("ALTER TABLE notifications RENAME TO moved_away")
        other.close()
        short = await checks_of(client)
        full = await checks_of(client, ADMIN_KEY)
    assert (short.status_code, short.json()["status"]) == (503, "not ready")
    assert short.json()["checks"]["database"] == "unusable"
    assert "no such table" not in short.text and "smtp_last_contact" not in short.text
    assert full.status_code == 503 and "no such table" in full.json()["checks"]["database"]


async def test_readyz_shows_everything_with_auth_off(tmp_path: Path, smtp: SmtpServer) -> None:
    async with service(tmp_path, smtp) as client:
        await smtp.stop()
        await client.post("/v1/notifications", json=WELCOME)

        async def failing() -> bool:
            return "connection" in (await checks_of(client)).json()["checks"]["smtp"]

        await wait_for(failing)
        full = await checks_of(client)
    assert "smtp_last_contact" in full.json()
    assert f"127.0.0.1 on port {smtp.port}" in full.json()["checks"]["smtp"]


async def test_a_live_server_asks_for_the_token_and_logs_no_secret(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    env = service_env(
        tmp_path, smtp.port, API_KEYS=f"web:{WEB_KEY}", METRICS_TOKEN=TOKEN, LOG_LEVEL="DEBUG"
    )
    async with running(uvicorn_command(port), env=env, port=port, log=log) as live:
        assert (await live.client.get("/metrics")).status_code == 401
        assert (await live.client.get("/metrics", headers=bearer(WRONG))).status_code == 401
        assert (await live.client.get("/metrics", headers=bearer(TOKEN))).status_code == 200
        ready = await live.client.get("/readyz")
        assert set(ready.json()) == {"status", "checks"}
        assert str(smtp.port) not in ready.text
    output = read(log)
    assert "service.started" in output
    for secret in (TOKEN, WEB_KEY, WRONG):
        assert secret not in output


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_the_metrics_token_is_in_no_log_line(
    tmp_path: Path, smtp: SmtpServer, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    settings = {"metrics_token": TOKEN, "log_format": log_format, "log_level": "DEBUG"}
    async with service(tmp_path, smtp, **settings) as client:
        await client.get("/metrics", headers=bearer(TOKEN))
        await client.get("/metrics", headers=bearer(TOKEN[::-1]))
    output = capsys.readouterr().err
    if log_format == "json":
        assert all(json.loads(line) for line in output.splitlines() if line.startswith("{"))
    assert "service.started" in output
    assert TOKEN not in output and TOKEN[::-1] not in output
