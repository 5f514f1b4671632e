"""Real processes for tests about timing, processes and signals: a uvicorn server, a delivery
worker (`notifier worker`) and the one-shot `notifier` commands, each in a subprocess."""

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
    env.setdefault("AUTH", "on" if env.get("API_KEYS") or env.get("API_KEYS_FILE") else "off")
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
        await stop(process)


async def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if that has not ended it within 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def notifier_command(*args: str) -> list[str]:
    """The `notifier` command as the image runs it: `python -m app …`."""
    return [sys.executable, "-m", "app", *args]


@asynccontextmanager
async def worker_running(
    *, env: dict[str, str], log: Path, cwd: Path = ROOT
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Start `notifier worker`, wait until it says it delivers, yield it, then stop it."""
    process = start(notifier_command("worker"), env=env, log=log, cwd=cwd)
    try:
        deadline = time.monotonic() + 20
        while "worker.started" not in read(log):
            if process.poll() is not None:
                raise AssertionError(f"worker exited: {read(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker did not start: {read(log)}")
            await asyncio.sleep(0.05)
        yield process
    finally:
        await stop(process)


async def notifier(*args: str, env: dict[str, str], cwd: Path = ROOT) -> tuple[int, str]:
    """Run a one-shot `notifier` command to its end (off the event loop, so that servers in
    the test's loop keep answering); its exit code and output."""
    done = await asyncio.to_thread(
        subprocess.run,
        notifier_command(*args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


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
