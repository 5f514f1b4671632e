"""Heartbeats: a delivering process writes to the store every few seconds that it is alive, so
that `notifier health` (another process: a container's healthcheck) can tell a live worker from
a dead or stuck one.

The beat runs beside the delivery loop, not inside it: a loop that waits minutes between probes
while the SMTP settings are wrong is still a live worker, and says so in /readyz and its logs.
What stops the beat is what stops the process from doing anything: death, a blocked event loop,
a database it cannot write to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Protocol

from app.ops.logs import event
from app.settings import Settings

log = logging.getLogger("app.delivery.heartbeat")


class HeartbeatStore(Protocol):
    async def record_heartbeat(self, worker: str) -> None: ...


def worker_name() -> str:
    """This process's name in the heartbeats: `host:pid`. In a container the host name is the
    container's, so `notifier health` run inside it finds its own worker by the host."""
    return f"{socket.gethostname()}:{os.getpid()}"


def beat_interval(settings: Settings) -> float:
    """Seconds between beats: four poll intervals, within one to five seconds."""
    return min(max(settings.poll_interval * 4, 1.0), 5.0)


def fresh_within(settings: Settings) -> float:
    """A worker whose last beat is older than this is gone: it missed three beats."""
    return 3 * beat_interval(settings)


class Heartbeat:
    def __init__(self, *, store: HeartbeatStore, name: str, every: float) -> None:
        self.name = name
        self._store = store
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                await self._store.record_heartbeat(self.name)
            except Exception as exc:
                if not failing:  # once per outage, not every few seconds
                    event(
                        log,
                        "heartbeat.failed",
                        level=logging.WARNING,
                        worker=self.name,
                        error=str(exc) or repr(exc),
                        hint="while this lasts, `notifier health` reports the worker as gone",
                    )
                failing = True
            else:
                if failing:
                    event(log, "heartbeat.recovered", worker=self.name)
                failing = False
            await asyncio.sleep(self._every)
