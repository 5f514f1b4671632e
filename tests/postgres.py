"""Real PostgreSQL for tests: a fresh database per test session on the shared server, emptied
before each test, and private servers that a test may stop and start.

The shared server is TEST_POSTGRES_URL (default: postgres on 127.0.0.1:5432, trust auth); the
session's database gets a random name, is migrated to head, and is dropped at the end, so no
test sees another run's rows. A `PrivatePostgres` is a server of the test's own (`initdb` and
`pg_ctl` in a temporary folder, run as the `postgres` user when we are root, since PostgreSQL
refuses to run as root), for tests where the database itself goes away.

Load it with `pytest_plugins = ["tests.postgres"]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.store.migrations import migrate

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = (
    "notifications, attempts, idempotency_keys, heartbeats, suppressions, webhook_events,"
    " webhook_attempts"
)


def database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def _create_database(name: str) -> None:
    try:
        admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"cannot reach PostgreSQL at TEST_POSTGRES_URL ({exc}); start it or point the"
            " variable at a server where we may create databases"
        ) from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate(database_url(ADMIN_URL, name))


async def _drop_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _on_own_loop(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to the end on a loop of its own in another thread: the session fixture may
    be first asked for from inside a test's running loop, where asyncio.run is refused."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, work).result()


@pytest.fixture(scope="session")
def postgres_session_url() -> Iterator[str]:
    """A database created for this test session, migrated to head, dropped at the end."""
    name = f"notifier_test_{secrets.token_hex(6)}"
    _on_own_loop(_create_database(name))
    try:
        yield database_url(ADMIN_URL, name)
    finally:
        _on_own_loop(_drop_database(name))


async def empty_database(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
    finally:
        await connection.close()


@pytest.fixture
async def postgres_url(postgres_session_url: str) -> str:
    """The session's database, emptied for this test (before it, so a failed test's rows
    cannot leak into the next one)."""
    await empty_database(postgres_session_url)
    return postgres_session_url


async def scratch_database(prefix: str = "notifier_scratch") -> str:
    """An empty, unmigrated database of its own; drop it with `drop_database`."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return database_url(ADMIN_URL, name)


async def drop_database(url: str) -> None:
    await _drop_database(url.rsplit("/", 1)[1])


# -- a server of the test's own -------------------------------------------------------------


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl are: pg_config's answer, else the newest Debian-style
    /usr/lib/postgresql/<version>/bin, else the PATH."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, check=True)
            candidates.append(Path(out.stdout.decode().strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versions), key=_version, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    pytest.fail("PostgreSQL's server programs (initdb, pg_ctl) were not found; install them")


def _version(bindir: Path) -> list[int]:
    return [int(part) for part in bindir.parent.name.split(".") if part.isdigit()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivatePostgres:
    """A PostgreSQL server in a temporary folder, on a free port of 127.0.0.1, trust auth."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="notifier-pg-"))
        self.data = self.root / "data"
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:  # the server refuses to run as root: hand it to `postgres`
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def _run(self, program: str, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            str(self.bindir / program),
            *args,
            cwd=self.root,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **self._user,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            log = self.root / "server.log"
            server = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{program} failed: {output.decode()}\n{server}")

    async def init(self) -> None:
        await self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip

    async def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        await self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-w", "-t", "30", "-o", options,
        )  # fmt: skip

    async def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session with a FATAL message, `immediate` like a crash."""
        await self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "30")

    def _processes(self) -> list[int]:
        """The server's processes: the postmaster (its pid file's first line) and its children."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):  # a process that ended meanwhile
                # the parent's pid is the fourth field, after the name in parentheses
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """Stop every process of the server (SIGSTOP): connections stay open and nothing
        answers, as with a server that hangs or a network that drops packets."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    async def destroy(self) -> None:
        with contextlib.suppress(OSError):  # not running: no pid file
            self.thaw()
        with contextlib.suppress(RuntimeError):
            await self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A running server of this test's own, migrated to head."""
    server = PrivatePostgres()
    try:
        await server.init()
        await server.start()
        await migrate(server.url)
        yield server
    finally:
        await server.destroy()
