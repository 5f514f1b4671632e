"""The processes a measurement runs besides the load generator: the service (or a peer) under
uvicorn with a variant's settings, and the SMTP sink that counts what arrives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOKEN = "bench-secret-key"
REQUEST = {
    "template": "welcome",
    "to": ["Ada Lovelace <ada@example.com>"],
    "context": {"name": "Ada", "action_url": "https://example.com/start?user=42"},
    "tags": ["bench"],
}


@dataclass
class Variant:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    with_sink: bool = True
    postgres: bool = False  # on a fresh PostgreSQL database, else on a fresh SQLite file


@contextmanager
def sink(folder: Path, port: int) -> Iterator[Path]:
    stats = folder / f"sink-{port}.json"
    process = subprocess.Popen(
        [PYTHON, "-m", "bench.sink", "--port", str(port), "--stats", str(stats)], cwd=ROOT
    )
    try:
        wait_until(stats.exists, within=10, what="the SMTP sink to start")
        yield stats
    finally:
        process.terminate()
        process.wait()


def sink_stats(stats: Path) -> dict[str, float]:
    loaded: dict[str, float] = json.loads(stats.read_text())
    return loaded


@contextmanager
def server(
    variant: Variant, *, port: int, log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """The variant's server on `port`, healthy; `env` (the SMTP port and the database of this
    measurement) over the variant's own settings."""
    env = {**os.environ, **variant.env, **env}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*variant.command, "--port", str(port), "--no-access-log"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_until(healthy, within=30, what=f"{variant.name} to start (see {log})")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def service_env(**extra: str) -> dict[str, str]:
    return {
        "API_KEYS": f"bench:{TOKEN}",
        "AUTH": "on",  # whatever the shell says: the benchmark measures with auth on
        "RATE_LIMIT": "off",
        "SMTP_HOST": "127.0.0.1",
        "TEMPLATES_DIR": str(ROOT / "templates"),
        "ALLOWED_SENDERS": "@example.com",
        "QUEUE_HIGH_WATER": "1000000",
        **extra,
    }


def uvicorn(app: str, workers: int = 1) -> list[str]:
    return [PYTHON, "-m", "uvicorn", app, "--workers", str(workers), "--host", "127.0.0.1"]


def post_batches(port: int, count: int) -> int:
    """Accept `count` notifications through the batch endpoint; how many were accepted."""
    batch = json.dumps({"notifications": [REQUEST] * min(500, count)}).encode()
    accepted = 0
    while accepted < count:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/notifications/batch",
            data=batch,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            accepted += int(json.loads(answer.read())["accepted"])
    return accepted
