"""Two instances of the application in one test, as two replicas behind a load balancer would
be: same settings (so the same database and rate-limit storage), each with its own memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from tests.conftest import make_settings
from tests.smtp_server import SmtpServer


@asynccontextmanager
async def replicas(
    tmp_path: Path, smtp: SmtpServer, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    shared = make_settings(tmp_path, smtp.port, **settings)
    async with AsyncExitStack() as stack:
        clients = []
        for name in ("a", "b"):
            application = create_app(shared)
            await stack.enter_async_context(application.router.lifespan_context(application))
            transport = httpx.ASGITransport(app=application)
            client = httpx.AsyncClient(transport=transport, base_url=f"http://{name}")
            clients.append(await stack.enter_async_context(client))
        yield clients[0], clients[1]
