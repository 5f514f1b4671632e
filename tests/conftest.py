from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import settings as hypothesis_settings

from app.main import create_app
from app.settings import Settings
from tests.smtp_server import SmtpServer

pytest_plugins = ["tests.postgres"]  # a fresh PostgreSQL database per test session

ROOT = Path(__file__).resolve().parent.parent

# Property tests try the same examples on every run, so that a failure is reproducible
# anywhere; `pytest --hypothesis-profile=explore` tries new ones, many more.
hypothesis_settings.register_profile(
    "repeatable", derandomize=True, max_examples=400, deadline=None
)
hypothesis_settings.register_profile("explore", max_examples=20_000, deadline=None)
hypothesis_settings.load_profile("repeatable")

WELCOME: dict[str, Any] = {
    "template": "welcome",
    "to": ["ada@example.com"],
    "context": {"name": "Ada", "action_url": "https://example.com/start"},
}


async def wait_for(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float = 10.0
) -> None:
    """Poll `check` until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    server = await SmtpServer().start()
    yield server
    await server.stop()


def make_settings(tmp_path: Path, smtp_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port,
        "smtp_timeout": 5,
        "database_url": f"sqlite:///{tmp_path / 'notifications.db'}",
        "templates_dir": ROOT / "templates",
        "mail_from": "Notifier <noreply@example.com>",
        "allowed_senders": "@example.com",
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "rate_limit": "off",
    }
    values.update(overrides)
    # a test without keys runs without authentication, and says so as the service requires
    values.setdefault("auth", "on" if values.get("api_keys") else "off")
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpServer) -> Settings:
    return make_settings(tmp_path, smtp.port)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
