"""The console for tests: the app behind an HTTP client that keeps cookies, and signing in
through the sign-in form as a browser would."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from tests.conftest import make_settings
from tests.smtp_server import SmtpServer

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def console(
    tmp_path: Path, smtp: SmtpServer, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_settings(tmp_path, smtp.port, **settings))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
            yield client


def csrf_in(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    page = await client.get("/console/sign-in")
    return await client.post(
        "/console/sign-in", data={"key": key, "csrf": csrf_in(page.text), "next": "/console"}
    )
