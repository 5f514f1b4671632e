"""The benchmark script works: a tiny run (a few hundred notifications) produces the table, in
SQLite mode with its peers and, separately, in PostgreSQL mode (a fresh database of its own).
Speed itself is judged by `python -m bench.run`, never here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.live import ROOT
from tests.postgres import ADMIN_URL


def test_quick_benchmark_writes_a_table_with_every_variant(tmp_path: Path) -> None:
    output = tmp_path / "latest.md"
    subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(output)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=240,
    )
    report = output.read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines()}
    for variant in ("(a) bare", "(b) textbook", "(c) this service"):
        assert any(name.startswith(variant) for name in rows), variant
    service = next(line for name, line in rows.items() if name == "(c) this service")
    cells = [cell.strip() for cell in service.strip("|").split("|")]
    assert cells[7] == "0", f"lost: {service}"  # every accepted notification was delivered
    assert "Backlog: 300 accepted" in report and "0 duplicates" in report


def test_quick_postgres_benchmark_compares_with_sqlite_and_loses_nothing(tmp_path: Path) -> None:
    output = tmp_path / "latest.md"
    subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--postgres-only", "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, "BENCH_POSTGRES_URL": ADMIN_URL},  # the server the tests use
        check=True,
        capture_output=True,
        timeout=240,
    )
    report = output.read_text()
    assert "| (c) this service, DELIVERY=off (accept only) |" in report
    assert "| (d) PostgreSQL, DELIVERY=off (accept only) |" in report
    assert "| accepted/s, DELIVERY=off, / SQLite's" in report
    assert "| delivered/s, 2 workers / 1 worker |" in report
    assert "| lost, duplicates (worker drains) | 0, " in report  # every accepted one delivered
