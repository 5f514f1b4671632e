"""A real webhook receiver for the tests: a Starlette app served by uvicorn in a thread of its
own, on a port of its own (0 at first, the same one after a restart), that records every POST
(headers and raw body) and can misbehave on request: fail the first N deliveries with 500,
answer with a status of the test's choice (a redirect, say), or be down (stopped). A plugin of
the test session: the `receiver` fixture gives a test one, stopped at its end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.webhooks.signature import HEADER, verify


@dataclass
class Hit:
    """One POST as it arrived, and what the receiver answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float = field(default_factory=time.time)

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def verifies(self, secret: str, *, tolerance: float = 300) -> bool:
        return verify(
            self.headers[HEADER.lower()], self.body, secret, now=time.time(), tolerance=tolerance
        )


@dataclass
class Behaviour:
    fail_first: int = 0  # answer 500 to this many POSTs, then 204
    status: int = 204  # the answer after those
    headers: dict[str, str] = field(default_factory=dict)  # sent with `status`


class Receiver:
    def __init__(self) -> None:
        self.port = 0
        self.behaviour = Behaviour()
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/notifier"

    @property
    def delivered(self) -> list[Hit]:
        """The POSTs answered 2xx: the events the service may count as delivered."""
        with self._lock:
            return [hit for hit in self.hits if 200 <= hit.answered < 300]

    def reserve_port(self) -> int:
        """Pick the port now, without listening yet (the receiver starts out down)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        return self.port

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            failing = len(self.hits) < self.behaviour.fail_first
            status = 500 if failing else self.behaviour.status
            self.hits.append(Hit(request.url.path, dict(request.headers), body, answered=status))
        return Response(status_code=status, headers=None if failing else self.behaviour.headers)

    async def start(self) -> Receiver:
        listening = socket.socket()
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", self.port))
        self.port = listening.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, log_level="warning")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listening]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise AssertionError("the webhook receiver did not start")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            await asyncio.to_thread(self._thread.join, 10)
            self._server = self._thread = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.stop()
