"""Measure, side by side in one run: (a) a bare FastAPI 202 endpoint, (b) the textbook approach,
(c) this service with its real store and settings; then the service with the SMTP server down
(accept only) and a backlog drain. Writes a markdown table.

    python -m bench.run                      # 3 runs of 10 s each, backlog of 100,000
    python -m bench.run --quick              # a smoke run of a few hundred notifications
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.store.migrations import migrate
from bench.processes import free_ports, rss_mb, wait_until

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
class Run:
    accepted: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    delivered: int = 0
    delivered_per_s: float = 0.0
    duplicates: int = 0
    peak_rss_mb: float = 0.0

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    @property
    def lost(self) -> int:
        return self.accepted - self.delivered


@dataclass
class Variant:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    with_sink: bool = True


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
def server(variant: Variant, *, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, **variant.env}
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


def load(port: int, *, body: Path, seconds: float, connections: int) -> dict[str, Any]:
    output = subprocess.run(
        [
            PYTHON,
            "-m",
            "bench.loadgen",
            "--port",
            str(port),
            "--body",
            str(body),
            "--token",
            TOKEN,
            "--seconds",
            str(seconds),
            "--connections",
            str(connections),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if output.returncode:
        raise RuntimeError(f"the load generator failed: {output.stderr}")
    result: dict[str, Any] = json.loads(output.stdout)
    return result


def measure(
    variant: Variant, folder: Path, *, seconds: float, connections: int, drain_within: float
) -> Run:
    body = folder / "request.json"
    body.write_text(json.dumps(REQUEST))
    smtp_port, port = free_ports(2)
    database_url = f"sqlite:///{folder / f'{time.time_ns()}.db'}"
    migrated(database_url)
    variant.env.update(SMTP_PORT=str(smtp_port), DATABASE_URL=database_url)
    run = Run()
    with (
        sink(folder, smtp_port) if variant.with_sink else _nothing() as stats,
        server(variant, port=port, log=folder / "server.log") as process,
    ):
        result = load(port, body=body, seconds=seconds, connections=connections)
        statuses = result["statuses"]
        assert isinstance(statuses, dict)
        run.accepted = int(statuses.get("202", 0))
        run.seconds = float(result["seconds"])
        run.p50_ms, run.p99_ms = float(result["p50_ms"]), float(result["p99_ms"])
        if stats is not None:
            started = float(result["started_at"])
            with contextlib.suppress(TimeoutError):  # what never arrives counts as lost
                wait_until(
                    lambda: sink_stats(stats)["distinct"] >= run.accepted,
                    within=drain_within,
                    what="delivery",
                )
            final = sink_stats(stats)
            run.delivered = int(final["distinct"])
            run.duplicates = int(final["messages"] - final["distinct"])
            if final["last_at"]:
                run.delivered_per_s = run.delivered / (final["last_at"] - started)
        run.peak_rss_mb = rss_mb(process.pid, peak=True)
    return run


def migrated(database_url: str) -> None:
    """Migrate before the service starts, as a deployment does with its migrate step: the
    service then runs as every start but the first after an upgrade does, without Alembic
    loaded."""
    asyncio.run(migrate(database_url))


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def backlog(folder: Path, service: Variant, count: int) -> dict[str, float]:
    """Accept `count` with the SMTP server down, then start it: drain rate and memory."""
    smtp_port, port = free_ports(2)  # nothing listens on the SMTP port until the drain
    database_url = f"sqlite:///{folder / 'backlog.db'}"
    migrated(database_url)
    service.env.update(SMTP_PORT=str(smtp_port), DATABASE_URL=database_url)
    batch = json.dumps({"notifications": [REQUEST] * min(500, count)}).encode()
    with server(service, port=port, log=folder / "backlog.log") as process:
        accepted, started = 0, time.perf_counter()
        while accepted < count:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/notifications/batch",
                data=batch,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )
            with urllib.request.urlopen(request, timeout=60) as answer:
                accepted += json.loads(answer.read())["accepted"]
        accept_seconds = time.perf_counter() - started
        rss_before = rss_mb(process.pid)
        peak = rss_before
        with sink(folder, smtp_port) as stats:
            drain_started = time.time()

            def drained() -> bool:
                nonlocal peak
                peak = max(peak, rss_mb(process.pid))
                return sink_stats(stats)["distinct"] >= accepted

            wait_until(drained, within=max(120, count / 200), what="the backlog to drain")
            final = sink_stats(stats)
    return {
        "accepted": accepted,
        "accept_per_s": accepted / accept_seconds,
        "drain_per_s": final["distinct"] / (final["last_at"] - drain_started),
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
        "duplicates": final["messages"] - final["distinct"],
    }


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


def median(runs: list[Run], attribute: str) -> float:
    return float(statistics.median(float(getattr(run, attribute)) for run in runs))


def table(results: dict[str, list[Run]], *, bare: str, textbook: str) -> str:
    base_accept = median(results[bare], "accepted_per_s")
    base_delivered = median(results[textbook], "delivered_per_s") or 1.0
    lines = [
        "| variant | accepted/s | x bare | p50 ms | p99 ms | delivered/s | x textbook | lost | dup"
        " | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        accepted = median(runs, "accepted_per_s")
        delivered = median(runs, "delivered_per_s")
        ratio = f"{delivered / base_delivered:.1f}" if delivered else "-"
        lost = max(r.lost for r in runs) if delivered else "-"
        lines.append(
            f"| {name} | {accepted:,.0f} | {accepted / base_accept:.2f}"
            f" | {median(runs, 'p50_ms'):.1f} | {median(runs, 'p99_ms'):.1f} | {delivered:,.0f}"
            f" | {ratio} | {lost} | {max(r.duplicates for r in runs)}"
            f" | {median(runs, 'peak_rss_mb'):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s, backlog of 300")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.md")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.backlog, args.connections = 1, 1.0, 300, 16

    variants = [
        Variant("(a) bare FastAPI 202", uvicorn("bench.bare:app"), with_sink=False),
        Variant(
            "(b) textbook: BackgroundTasks + aiosmtplib.send",
            uvicorn("bench.textbook:app"),
            env={"SMTP_HOST": "127.0.0.1", "TEMPLATES_DIR": str(ROOT / "templates")},
        ),
        Variant("(c) this service", uvicorn("app.main:app"), env=service_env()),
        Variant(
            "(c) this service, 2 workers", uvicorn("app.main:app", workers=2), env=service_env()
        ),
        Variant(
            "(c) this service, SMTP down (accept only)",
            uvicorn("app.main:app"),
            env=service_env(),
            with_sink=False,
        ),
    ]
    results: dict[str, list[Run]] = {v.name: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="notifier-bench-") as tmp:
        for number in range(args.runs):
            for variant in variants:  # interleaved, so drift on a noisy machine hits all alike
                folder = Path(tmp) / f"{number}-{len(results[variant.name])}-{variant.command[3]}"
                folder.mkdir(parents=True, exist_ok=True)
                run = measure(
                    variant,
                    folder,
                    seconds=args.seconds,
                    connections=args.connections,
                    drain_within=max(60.0, args.seconds * 10),
                )
                results[variant.name].append(run)
                print(f"run {number + 1}: {variant.name}: {run}", file=sys.stderr, flush=True)
        # RETRY_BASE_SECONDS=1: the one notification tried while the server was down (the
        # others wait for it to answer) is retried in a second, not in the default 30.
        drained = backlog(
            Path(tmp),
            Variant("backlog", uvicorn("app.main:app"), env=service_env(RETRY_BASE_SECONDS="1")),
            args.backlog,
        )

    report = "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()},"
            f" {os.cpu_count()} cores, Python {platform.python_version()};"
            f" {args.connections} connections, {args.runs} run(s) of {args.seconds:g} s, medians;"
            " one uvicorn worker unless said.",
            "",
            table(results, bare=variants[0].name, textbook=variants[1].name),
            "",
            f"Backlog: {drained['accepted']:,.0f} accepted with the SMTP server down"
            f" ({drained['accept_per_s']:,.0f}/s through the batch endpoint), then drained at"
            f" {drained['drain_per_s']:,.0f} msg/s; RSS {drained['rss_before_mb']:.0f} MB"
            f" before the drain, peak {drained['peak_rss_mb']:.0f} MB;"
            f" {drained['duplicates']:.0f} duplicates.",
            "",
        ]
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
