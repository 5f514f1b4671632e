"""Delivery by `python -m app worker` processes on PostgreSQL: a backlog accepted first (an API
with DELIVERY=off, through the batch endpoint, no SMTP server listening), then the SMTP sink
and N workers start and drain it. The rate counts from the first mail the sink receives to
the last, so it measures delivery, not how long a Python process takes to start."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.postgres import fresh_database
from bench.processes import free_ports, rss_mb, wait_until
from bench.services import (
    PYTHON,
    ROOT,
    Variant,
    post_batches,
    server,
    service_env,
    sink,
    sink_stats,
)


@dataclass
class Drain:
    workers: int
    accepted: int
    delivered: int
    duplicates: int
    delivered_per_s: float
    peak_rss_mb: float  # all workers together

    @property
    def lost(self) -> int:
        return self.accepted - self.delivered


def drain(folder: Path, *, workers: int, count: int, api: list[str]) -> Drain:
    """Accept `count` through an API with DELIVERY=off, then drain them with `workers` worker
    processes on a fresh PostgreSQL database."""
    smtp_port, port = free_ports(2)  # nothing listens on the SMTP port until the drain
    env = service_env(DELIVERY="off")
    with fresh_database() as database:
        here = {"SMTP_PORT": str(smtp_port), "DATABASE_URL": database}
        with server(Variant("feeding API", api, env), port=port, log=folder / "api.log", env=here):
            accepted = post_batches(port, count)
        with sink(folder, smtp_port) as stats, _workers(workers, {**env, **here}, folder) as pids:
            peak = 0.0

            def drained() -> bool:
                nonlocal peak
                peak = max(peak, sum(rss_mb(pid) for pid in pids))
                return sink_stats(stats)["distinct"] >= accepted

            with contextlib.suppress(TimeoutError):  # what never arrives counts as lost
                wait_until(drained, within=max(60.0, count / 100), what="the workers to drain")
            final = sink_stats(stats)
    delivered = int(final["distinct"])
    spent = final["last_at"] - final["first_at"]
    return Drain(
        workers=workers,
        accepted=accepted,
        delivered=delivered,
        duplicates=int(final["messages"] - final["distinct"]),
        delivered_per_s=delivered / spent if spent > 0 else 0.0,
        peak_rss_mb=peak,
    )


@contextlib.contextmanager
def _workers(count: int, env: dict[str, str], folder: Path) -> Iterator[list[int]]:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for number in range(count):
            with (folder / f"worker-{number}.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        [PYTHON, "-m", "app", "worker"],
                        cwd=ROOT,
                        env={**os.environ, **env},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
