"""Real Redis for tests: the shared server (TEST_REDIS_URL, default 127.0.0.1:6379, database 0),
with a key prefix of each test's own so that no test sees another's keys, and private servers
that a test may stop and start (redis-server on a free port, keeping nothing on disk)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.processes import free_port
from tests.conftest import wait_for

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unique_prefix() -> str:
    return f"test-{secrets.token_hex(6)}"


async def answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()  # type: ignore[misc]  # redis-py types it for both of its clients
        return True
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def shared_redis() -> str:
    """TEST_REDIS_URL, once it answers."""
    if not await answers(REDIS_URL):
        raise RuntimeError(
            f"cannot reach Redis at TEST_REDIS_URL ({REDIS_URL}); start it (scripts/services"
            " does) or point the variable at a server the tests may write to"
        )
    return REDIS_URL


class PrivateRedis:
    """A redis-server of the test's own, on a port of its own, that the test stops and starts."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._folder = folder
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self._process = self._spawn()
        await wait_for(lambda: answers(self.url), within=10)

    def _spawn(self) -> subprocess.Popen[bytes]:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis)")
        with (self._folder / "redis.log").open("ab") as log:
            return subprocess.Popen(
                [
                    server,
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self._folder)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            await asyncio.to_thread(self._process.wait, 10)
        self._process = None


@asynccontextmanager
async def private_redis(folder: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(folder)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
