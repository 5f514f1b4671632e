"""The `notifier` command: `python -m app` and the installed script, each role's exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.processes import free_port
from tests.conftest import WELCOME, wait_for
from tests.live import ROOT, notifier, notifier_command, running, service_env, worker_running
from tests.smtp_server import SmtpServer

COMMANDS = ("serve", "worker", "migrate", "health")


async def test_python_m_app_lists_every_role(tmp_path: Path) -> None:
    code, output = await notifier("--help", env=service_env(tmp_path, 25))
    assert code == 0, output
    assert output.startswith("usage: notifier")
    for command in COMMANDS:
        assert f"    {command} " in output, command


def test_the_installed_notifier_script_is_the_same_command() -> None:
    # pyproject.toml's [project.scripts]; the test environment installs the project
    script = Path(sys.executable).parent / "notifier"
    done = subprocess.run(
        [script, "health", "--help"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: notifier health")


async def test_an_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    code, output = await notifier("deliver", env=service_env(tmp_path, 25))
    assert code == 2
    assert "invalid choice: 'deliver'" in output


@pytest.mark.slow
async def test_serve_runs_the_api_that_uvicorn_runs(tmp_path: Path, smtp: SmtpServer) -> None:
    port = free_port()
    command = notifier_command("serve", "--host", "127.0.0.1", "--port", str(port))
    env = service_env(tmp_path, smtp.port)
    async with running(command, env=env, port=port, log=tmp_path / "log") as live:
        response = await live.client.post("/v1/notifications", json=WELCOME)
        assert response.status_code == 202, response.text
        await wait_for(lambda: len(smtp.messages) == 1)  # DELIVERY=embedded: it sends too
        live.process.send_signal(signal.SIGTERM)
        # as `uvicorn app.main:app`: a graceful shutdown, then the signal re-raised to exit
        assert await live.exited() == -signal.SIGTERM


async def test_serve_with_a_wrong_setting_names_it_and_fails(tmp_path: Path) -> None:
    env = service_env(tmp_path, 25)
    del env["AUTH"]
    code, output = await notifier("serve", "--port", str(free_port()), env=env)
    assert code != 0
    assert "AUTH: " in output and "set AUTH=off" in output, output


def tables(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}


async def test_migrate_makes_the_schema_and_exits_0(tmp_path: Path) -> None:
    env = service_env(tmp_path, 25)
    code, output = await notifier("migrate", env=env)
    assert code == 0, output
    assert {"notifications", "attempts", "idempotency_keys", "heartbeats"} <= tables(
        tmp_path / "live.db"
    )
    assert (await notifier("migrate", env=env))[0] == 0  # at this version already: nothing to do


async def test_migrate_with_a_wrong_setting_names_it_and_fails(tmp_path: Path) -> None:
    code, output = await notifier("migrate", env=service_env(tmp_path, 25, DELIVERY="sometimes"))
    assert code != 0
    assert "DELIVERY: " in output


@pytest.mark.slow
async def test_health_is_0_while_a_worker_beats_and_1_without_one(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    # POLL_INTERVAL=0.1: a beat every second, stale after three missed
    env = service_env(tmp_path, smtp.port, POLL_INTERVAL="0.1")
    assert (await notifier("migrate", env=env))[0] == 0
    code, output = await notifier("health", env=env)
    assert code == 1 and "no worker on " in output, output

    async with worker_running(env=env, log=tmp_path / "worker") as worker:
        code, output = await notifier("health", env=env)
        assert code == 0 and "ok: a worker on " in output, output
        assert (await notifier("health", "--any-host", env=env))[0] == 0
        worker.kill()  # no goodbye: its last beat stays behind and ages
        assert await asyncio.to_thread(worker.wait, 10) == -signal.SIGKILL

    async def stale() -> bool:
        code, output = await notifier("health", env=env)
        return code == 1 and "s old (fresh means under 3 s)" in output

    await wait_for(stale, within=15)


async def test_health_judges_only_this_machines_workers_unless_told(tmp_path: Path) -> None:
    env = service_env(tmp_path, 25)
    assert (await notifier("migrate", env=env))[0] == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "live.db")) as connection, connection:
        # a worker on another machine, beating now
        beat = ("elsewhere.example:7", time.time())
        connection.execute("INSERT INTO heartbeats VALUES (?, ?)", beat)
    code, output = await notifier("health", env=env)
    assert code == 1 and "no worker on " in output, output
    code, output = await notifier("health", "--any-host", env=env)
    assert code == 0 and "ok: a worker anywhere" in output, output
    code, output = await notifier("health", "--any-host", "--max-age", "0", env=env)
    assert code == 1 and "fresh means under 0 s" in output, output


# -- health reads only: a healthcheck runs every few seconds and must never migrate -----------


async def postgres_tables(url: str) -> set[str]:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await connection.close()
    return {row["table_name"] for row in rows}


async def postgres_revision(url: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        revision: str = await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()
    return revision


async def test_health_on_a_missing_sqlite_file_creates_nothing_and_says_to_migrate(
    tmp_path: Path,
) -> None:
    code, output = await notifier("health", env=service_env(tmp_path, 25))
    assert code == 1
    assert "DATABASE_URL has no schema yet: run `notifier migrate`" in output, output
    assert not (tmp_path / "live.db").exists()


async def test_health_on_an_empty_postgresql_database_creates_no_table_and_says_to_migrate(
    tmp_path: Path,
) -> None:
    from tests.postgres import drop_database, scratch_database

    url = await scratch_database()
    try:
        code, output = await notifier("health", env=service_env(tmp_path, 25, DATABASE_URL=url))
        assert code == 1
        assert "DATABASE_URL has no schema yet: run `notifier migrate`" in output, output
        assert await postgres_tables(url) == set()
    finally:
        await drop_database(url)


async def test_health_leaves_a_schema_that_is_behind_as_it_is_and_names_both_revisions(
    tmp_path: Path,
) -> None:
    from app.store.migrations import head, migrate
    from tests.postgres import drop_database, scratch_database

    url = await scratch_database()
    try:
        await migrate(url, revision="0002")
        code, output = await notifier("health", env=service_env(tmp_path, 25, DATABASE_URL=url))
        assert code == 1
        assert f"is at schema revision 0002, this version needs {head()}" in output, output
        assert await postgres_revision(url) == "0002"
        assert "heartbeats" not in await postgres_tables(url)  # 0003's table
    finally:
        await drop_database(url)


async def test_health_on_a_sqlite_file_whose_schema_is_behind_leaves_it_behind(
    tmp_path: Path,
) -> None:
    from app.store.migrations import migrate

    await migrate(f"sqlite:///{tmp_path / 'live.db'}", revision="0002")
    code, output = await notifier("health", env=service_env(tmp_path, 25))
    assert code == 1 and "is at schema revision 0002" in output, output
    with contextlib.closing(sqlite3.connect(tmp_path / "live.db")) as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == "0002"
