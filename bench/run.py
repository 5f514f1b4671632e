"""Measure, side by side in one run: (a) a bare FastAPI 202 endpoint, (b) the textbook approach,
(c) this service on SQLite with its real store and settings, also with the SMTP server down and
with DELIVERY=off (accept only), then a backlog drain; (d) PostgreSQL mode: the API with
DELIVERY=off, and 1, then 2 worker processes draining a backlog (bench/workers.py). Writes a
markdown table, and PostgreSQL mode's ratios to SQLite mode and the textbook.

    python -m bench.run                      # 3 runs of 10 s each, backlogs of 100,000 and 20,000
    python -m bench.run --quick              # a smoke run of a few hundred notifications, SQLite
    python -m bench.run --quick --postgres-only   # the same for PostgreSQL mode
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.store.migrations import migrate
from bench.postgres import fresh_database
from bench.processes import free_ports, rss_mb, wait_until
from bench.services import (
    PYTHON,
    REQUEST,
    ROOT,
    TOKEN,
    Variant,
    post_batches,
    server,
    service_env,
    sink,
    sink_stats,
    uvicorn,
)
from bench.workers import Drain, drain

BARE = "(a) bare FastAPI 202"
TEXTBOOK = "(b) textbook: BackgroundTasks + aiosmtplib.send"
SERVICE = "(c) this service"
SQLITE_ACCEPT_ONLY = "(c) this service, DELIVERY=off (accept only)"
POSTGRES_ACCEPT_ONLY = "(d) PostgreSQL, DELIVERY=off (accept only)"


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
    run = Run()
    with (
        fresh_database() if variant.postgres else _sqlite_file(folder) as database,
        sink(folder, smtp_port) if variant.with_sink else _nothing() as stats,
        server(
            variant,
            port=port,
            log=folder / "server.log",
            env={"SMTP_PORT": str(smtp_port), "DATABASE_URL": database},
        ) as process,
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


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


@contextmanager
def _sqlite_file(folder: Path) -> Iterator[str]:
    yield migrated(f"sqlite:///{folder / f'{time.time_ns()}.db'}")


def migrated(database_url: str) -> str:
    """Migrated before the service starts, as a deployment's migrate step would: the process
    measured then loads no migration machinery."""
    asyncio.run(migrate(database_url))
    return database_url


def backlog(folder: Path, service: Variant, count: int) -> dict[str, float]:
    """Accept `count` with the SMTP server down, then start it: drain rate and memory."""
    smtp_port, port = free_ports(2)  # nothing listens on the SMTP port until the drain
    database = migrated(f"sqlite:///{folder / 'backlog.db'}")
    with server(
        service,
        port=port,
        log=folder / "backlog.log",
        env={"SMTP_PORT": str(smtp_port), "DATABASE_URL": database},
    ) as process:
        started = time.perf_counter()
        accepted = post_batches(port, count)
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


def median(runs: list[Run], attribute: str) -> float:
    return float(statistics.median(float(getattr(run, attribute)) for run in runs))


def table(results: dict[str, list[Run]]) -> str:
    """Every variant's medians; "x bare" and "x textbook" when those peers ran."""
    base_accept = median(results[BARE], "accepted_per_s") if BARE in results else 0.0
    base_delivered = median(results[TEXTBOOK], "delivered_per_s") if TEXTBOOK in results else 0.0
    lines = [
        "| variant | accepted/s | x bare | p50 ms | p99 ms | delivered/s | x textbook | lost | dup"
        " | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        accepted = median(runs, "accepted_per_s")
        delivered = median(runs, "delivered_per_s")
        ratio = f"{delivered / base_delivered:.1f}" if delivered and base_delivered else "-"
        of_bare = f"{accepted / base_accept:.2f}" if base_accept else "-"
        lost = max(r.lost for r in runs) if delivered else "-"
        lines.append(
            f"| {name} | {accepted:,.0f} | {of_bare}"
            f" | {median(runs, 'p50_ms'):.1f} | {median(runs, 'p99_ms'):.1f} | {delivered:,.0f}"
            f" | {ratio} | {lost} | {max(r.duplicates for r in runs)}"
            f" | {median(runs, 'peak_rss_mb'):.0f} |"
        )
    return "\n".join(lines)


def postgres_report(results: dict[str, list[Run]], drains: dict[int, list[Drain]]) -> str:
    """PostgreSQL mode against SQLite mode and the textbook peer of the same run, as ratios."""
    sqlite, postgres = results[SQLITE_ACCEPT_ONLY], results[POSTGRES_ACCEPT_ONLY]
    one, two = (float(statistics.median(d.delivered_per_s for d in drains[n])) for n in (1, 2))
    every = drains[1] + drains[2]
    lost, duplicates = max(d.lost for d in every), max(d.duplicates for d in every)
    accepted = median(postgres, "accepted_per_s") / median(sqlite, "accepted_per_s")
    p99 = median(postgres, "p99_ms") / median(sqlite, "p99_ms")
    peers = {  # when they ran (not with --postgres-only)
        f"{peer} (row {name[:3]})": median(results[name], "delivered_per_s")
        for peer, name in (("textbook", TEXTBOOK), ("SQLite embedded", SERVICE))
        if name in results
    }
    by_peer = [(f"delivered/s, 1 worker / {p}", f"{one / r:.2f}", "") for p, r in peers.items()]
    rows = [
        ("accepted/s, DELIVERY=off, / SQLite's (row (c) DELIVERY=off)", f"{accepted:.2f}", "≥ 0.5"),
        ("p99 ms, DELIVERY=off, / SQLite's", f"{p99:.2f}", ""),
        ("delivered/s, 2 workers / 1 worker", f"{two / one:.2f}", "> 1"),
        *by_peer,
        ("lost, duplicates (worker drains)", f"{lost}, {duplicates}", "0 lost"),
    ]  # fmt: skip
    lines = [
        "PostgreSQL mode: the API with DELIVERY=off (row (d)) and `python -m app worker`"
        f" processes draining a backlog of {every[0].accepted:,} accepted first (first mail to"
        f" last): 1 worker {one:,.0f} msg/s, 2 workers {two:,.0f} msg/s; {lost} lost,"
        f" {duplicates} duplicates; peak RSS of the workers"
        f" {max(d.peak_rss_mb for d in drains[1]):.0f} MB (1),"
        f" {max(d.peak_rss_mb for d in drains[2]):.0f} MB (2 together).",
        "",
        "| PostgreSQL mode | ratio | expected |",
        "|---|---|---|",
        *(f"| {what} | {ratio} | {expected} |" for what, ratio, expected in rows),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument(
        "--worker-backlog",
        type=int,
        default=20_000,
        help="what 1, then 2 worker processes drain on PostgreSQL in each run (20,000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run of 1 s, backlogs of 300; no PostgreSQL"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--no-postgres", action="store_true", help="SQLite and the peers only")
    only.add_argument(
        "--postgres-only",
        action="store_true",
        help="PostgreSQL mode and its SQLite accept-only peer only (with --quick: a smoke run)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.md")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds, args.backlog, args.connections = 1, 1.0, 300, 16
        args.worker_backlog = 300
        # PostgreSQL adds a database, an API and workers to start per measurement: ~15 s
        # more on a busy 2-core machine, so the smoke runs of the two modes are separate
        args.no_postgres = not args.postgres_only
    sqlite, postgres = not args.postgres_only, not args.no_postgres

    variants = [v for v in all_variants() if (sqlite or v.name == SQLITE_ACCEPT_ONLY)]
    if postgres:
        variants.append(
            Variant(
                POSTGRES_ACCEPT_ONLY,
                uvicorn("app.main:app"),
                env=service_env(DELIVERY="off"),
                with_sink=False,
                postgres=True,
            )
        )
    results: dict[str, list[Run]] = {v.name: [] for v in variants}
    drains: dict[int, list[Drain]] = {1: [], 2: []}
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
            for workers in drains if postgres else ():
                folder = Path(tmp) / f"{number}-drain-{workers}"
                folder.mkdir(parents=True)
                drained_by = drain(
                    folder, workers=workers, count=args.worker_backlog, api=uvicorn("app.main:app")
                )
                drains[workers].append(drained_by)
                print(f"run {number + 1}: {drained_by}", file=sys.stderr, flush=True)
        if sqlite:
            # RETRY_BASE_SECONDS=1: the one notification tried while the server was down (the
            # others wait for it to answer) is retried in a second, not in the default 30.
            service = Variant(
                "backlog", uvicorn("app.main:app"), env=service_env(RETRY_BASE_SECONDS="1")
            )
            drained = backlog(Path(tmp), service, args.backlog)

    report = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()},"
        f" {os.cpu_count()} cores, Python {platform.python_version()};"
        f" {args.connections} connections, {args.runs} run(s) of {args.seconds:g} s, medians;"
        " one uvicorn worker unless said.",
        "",
        table(results),
        "",
    ]
    if sqlite:
        report += [
            f"Backlog: {drained['accepted']:,.0f} accepted with the SMTP server down"
            f" ({drained['accept_per_s']:,.0f}/s through the batch endpoint), then drained at"
            f" {drained['drain_per_s']:,.0f} msg/s; RSS {drained['rss_before_mb']:.0f} MB"
            f" before the drain, peak {drained['peak_rss_mb']:.0f} MB;"
            f" {drained['duplicates']:.0f} duplicates.",
            "",
        ]
    if postgres:
        report += [postgres_report(results, drains)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(report))
    print("\n".join(report))


def all_variants() -> list[Variant]:
    """What runs on SQLite (and the peers), in the order of the table."""
    return [
        Variant(BARE, uvicorn("bench.bare:app"), with_sink=False),
        Variant(
            TEXTBOOK,
            uvicorn("bench.textbook:app"),
            env={"SMTP_HOST": "127.0.0.1", "TEMPLATES_DIR": str(ROOT / "templates")},
        ),
        Variant(SERVICE, uvicorn("app.main:app"), env=service_env()),
        Variant(
            "(c) this service, 2 workers", uvicorn("app.main:app", workers=2), env=service_env()
        ),
        Variant(
            "(c) this service, SMTP down (accept only)",
            uvicorn("app.main:app"),
            env=service_env(),
            with_sink=False,
        ),
        Variant(
            SQLITE_ACCEPT_ONLY,
            uvicorn("app.main:app"),
            env=service_env(DELIVERY="off"),
            with_sink=False,
        ),
    ]


if __name__ == "__main__":
    main()
