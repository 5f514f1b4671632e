from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import settings as hypothesis_settings

from app.main import create_app
from app.settings import Settings
from app.store.url import parse_database_url
from tests.smtp_server import SmtpServer

# a fresh PostgreSQL database per test session; Chromium for the console's pages; a webhook
# receiver
pytest_plugins = ["tests.postgres", "tests.browser", "tests.webhook_receiver"]

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
    keyed = values.get("api_keys") or values.get("api_keys_file")
    values.setdefault("auth", "on" if keyed else "off")
    return Settings(_env_file=None, **values)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the test's service keeps its notifications: a SQLite file of the test's own, or,
    in a test marked BOTH_BACKENDS, also the session's PostgreSQL database (emptied)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'notifications.db'}"


# Runs a test once on each store: its `database_url` (and `settings`, `app`, `client`) name
# a SQLite file, then a PostgreSQL database.
BOTH_BACKENDS = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


async def count_rows(database_url: str, table: str) -> int:
    """How many rows `table` holds, in either store, read behind the service's back."""
    url = parse_database_url(database_url)
    if url.backend == "sqlite":
        with sqlite3.connect(url.sqlite_path) as db:
            count: int = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        db.close()
        return count
    connection = await asyncpg.connect(url.postgres_dsn)
    try:
        counted: int = await connection.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await connection.close()
    return counted


@pytest.fixture
def settings(tmp_path: Path, smtp: SmtpServer, database_url: str) -> Settings:
    return make_settings(tmp_path, smtp.port, database_url=database_url)


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
