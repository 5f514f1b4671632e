"""A real uvicorn server in a subprocess, for tests about timing, processes and signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def service_env(tmp_path: Path, smtp_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "API_KEYS", "AUTH"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_port),
        DATABASE_URL=f"sqlite:///{tmp_path / 'live.db'}",
        TEMPLATES_DIR=str(ROOT / "templates"),
        ALLOWED_SENDERS="@example.com",
        RATE_LIMIT="off",
    )
    env.update(extra)
    # without keys the service runs without authentication only when told so
    env.setdefault("AUTH", "on" if env.get("API_KEYS") else "off")
    return env


def start(
    command: Sequence[str], *, env: dict[str, str], log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT
        )


def read(log: Path) -> str:
    return log.read_text(errors="replace")


@dataclass
class Live:
    client: httpx.AsyncClient
    process: subprocess.Popen[bytes]

    async def exited(self, within: float = 20) -> int:
        return await asyncio.to_thread(self.process.wait, within)


@asynccontextmanager
async def running(
    command: Sequence[str], *, env: dict[str, str], port: int, log: Path, cwd: Path = ROOT
) -> AsyncIterator[Live]:
    """Start `command`, wait until /healthz answers, yield it with a client, then stop it."""
    process = start(command, env=env, log=log, cwd=cwd)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            deadline = time.monotonic() + 20
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"server exited: {read(log)}")
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"server did not start: {read(log)}")
                await asyncio.sleep(0.05)
            yield Live(client, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def uvicorn_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
