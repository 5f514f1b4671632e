"""Schema migrations: a SQLite file made before migrations existed upgrades in place and its
notifications go out; every path (fresh or old, SQLite or PostgreSQL) ends at one schema;
processes migrating at once are safe."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from app.errors import StoreUnavailable
from app.store import opening
from app.store.migrations import head, migrate
from tests import old_schemas
from tests.conftest import BOTH_BACKENDS, WELCOME, make_settings
from tests.smtp_server import SmtpServer
from tests.test_delivery import reaches, service, shown

OLD_SCHEMAS = {
    "before request ids": old_schemas.BEFORE_REQUEST_IDS,
    "first release": old_schemas.FIRST_RELEASE,
    "fenced claims": old_schemas.FENCED_CLAIMS,
}
_COLUMNS = (
    "id, status, template, caller, request, message_id, subject, pending, refused, last_error,"
    " next_attempt_at, created_at, updated_at, sent_at"
)


def make_old_file(path: Path, schema: str) -> None:
    """A file as an earlier version left it: one notification deferred after two attempts
    (bob still pending) and one sent, with an attempt each."""
    request = json.dumps({**WELCOME, "to": ["ada@example.com", "bob@example.com"]})
    refused = json.dumps([{"email": "bob@example.com", "code": 550, "message": "no"}])
    now = time.time()
    with sqlite3.connect(path) as db:
        db.executescript(schema)
        db.execute(
            f"INSERT INTO notifications ({_COLUMNS}) VALUES"
            " ('retry', 'deferred', 'welcome', 'web', ?, '<m1@example.com>', 'Hi', ?, '[]',"
            " '451 later', ?, ?, ?, NULL)",
            (request, json.dumps(["bob@example.com"]), now - 1, now - 60, now - 30),
        )
        db.execute(
            f"INSERT INTO notifications ({_COLUMNS}) VALUES"
            " ('done', 'sent', 'welcome', 'web', ?, '<m2@example.com>', 'Hi', '[]', ?, NULL,"
            " NULL, ?, ?, ?)",
            (request, refused, now - 60, now - 30, now - 30),
        )
        db.executemany(
            "INSERT INTO attempts (notification_id, at, outcome, smtp_code, duration_ms)"
            " VALUES (?, ?, ?, ?, 1)",
            [
                ("retry", now - 50, "deferred", 451),
                ("retry", now - 40, "deferred", 451),
                ("done", now - 30, "sent", 250),
            ],
        )
        if "attempts INTEGER" in schema:  # that version kept the count itself
            db.execute("UPDATE notifications SET attempts = 2 WHERE id = 'retry'")
            db.execute("UPDATE notifications SET attempts = 1 WHERE id = 'done'")
    db.close()


def schema_of(path: Path) -> dict[str, object]:
    """What the store relies on: each table's columns and the indexes, not the SQL text (an
    added column is appended to the CREATE TABLE text)."""
    with sqlite3.connect(path) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        found: dict[str, object] = {
            table: sorted(
                (name, kind, notnull, default, pk)
                for _, name, kind, notnull, default, pk in db.execute(f"PRAGMA table_info({table})")
            )
            for table in tables
        }
        found["indexes"] = db.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).fetchall()
        found["version"] = db.execute("SELECT version_num FROM alembic_version").fetchall()
    db.close()
    return found


def version_of(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        versions = [v for (v,) in db.execute("SELECT version_num FROM alembic_version")]
    db.close()
    return versions


# -- SQLite: upgrading in place -------------------------------------------------------------


@pytest.mark.parametrize("schema", OLD_SCHEMAS.values(), ids=OLD_SCHEMAS.keys())
async def test_a_file_made_before_migrations_upgrades_in_place_and_its_mail_goes_out(
    tmp_path: Path, smtp: SmtpServer, schema: str
) -> None:
    path = tmp_path / "old.db"
    make_old_file(path, schema)
    async with service(tmp_path, smtp, database_url=f"sqlite:///{path}") as client:
        retry = await reaches(client, "/v1/notifications/retry", "sent")
        assert [a["outcome"] for a in retry["attempts"]] == ["deferred", "deferred", "sent"]
        done = await shown(client, "/v1/notifications/done")
        assert [(r["email"], r["status"]) for r in done["recipients_status"]] == [
            ("ada@example.com", "delivered"),
            ("bob@example.com", "refused"),
        ]
        listed = (await client.get("/v1/notifications")).json()["items"]
        assert {n["id"] for n in listed} == {"retry", "done"}
    assert [m.rcpt_tos for m in smtp.messages] == [["bob@example.com"]]  # only the one pending
    with sqlite3.connect(path) as db:
        counts = dict(db.execute("SELECT id, attempts FROM notifications").fetchall())
    db.close()
    assert counts == {"retry": 3, "done": 1}  # counted from the attempt rows, then kept
    assert version_of(path) == [head()]


@pytest.mark.parametrize("schema", OLD_SCHEMAS.values(), ids=OLD_SCHEMAS.keys())
async def test_an_old_file_and_a_new_one_end_with_the_same_schema(
    tmp_path: Path, schema: str
) -> None:
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    make_old_file(old, schema)
    await migrate(f"sqlite:///{old}")
    await migrate(f"sqlite:///{new}")
    assert schema_of(old) == schema_of(new)
    await migrate(f"sqlite:///{old}")  # at head: nothing changes
    assert schema_of(old) == schema_of(new)


async def test_ten_processes_migrating_one_new_file_at_once_leave_one_schema(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    # each migration runs in a thread of its own, on its own connection: to SQLite's locks
    # these are ten processes
    await asyncio.gather(*(migrate(f"sqlite:///{path}") for _ in range(10)))
    reference = tmp_path / "reference.db"
    await migrate(f"sqlite:///{reference}")
    assert schema_of(path) == schema_of(reference)


async def test_a_file_another_program_keeps_locked_stops_the_migration_naming_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    await migrate(f"sqlite:///{path}", revision="0001")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match=r"DATABASE_URL.*locked"):
            await migrate(f"sqlite:///{path}", wait=0.1)
    finally:
        blocker.close()
    assert version_of(path) == ["0001"]  # all or nothing
    await migrate(f"sqlite:///{path}")
    assert version_of(path) == [head()]


@BOTH_BACKENDS
async def test_the_migrate_command_brings_the_settings_database_to_head(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, 25, database_url=database_url)
    await opening.migrate(settings)  # what `notifier migrate` runs; the session's is at head
    store = await opening.open_store(settings)
    try:
        assert await store.count_waiting() == 0
    finally:
        await store.close()
    if database_url.startswith("sqlite"):
        assert version_of(settings.database_path) == [head()]


def test_the_head_read_from_the_file_names_is_alembics() -> None:
    from app.store.migrations.upgrade import alembic_head

    assert head() == alembic_head()


async def test_a_process_whose_database_is_at_head_loads_no_migration_machinery(
    tmp_path: Path,
) -> None:
    """Alembic, SQLAlchemy (and asyncpg, on SQLite) would cost every request: memory, and
    garbage collections that walk their objects."""
    url = f"sqlite:///{tmp_path / 'at-head.db'}"
    await migrate(url)
    script = """if True:
        import asyncio, sys
        from app.settings import Settings
        from app.store.opening import open_store

        async def main() -> None:
            store = await open_store(Settings(_env_file=None, auth="off"))
            await store.close()

        asyncio.run(main())
        print(sorted({m.split(".")[0] for m in sys.modules} & {"alembic", "sqlalchemy", "asyncpg"}))
    """
    env = {**os.environ, "DATABASE_URL": url}
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    assert out.decode().strip() == "[]"


# -- PostgreSQL -----------------------------------------------------------------------------


async def test_a_postgresql_database_at_the_first_revision_upgrades_with_its_rows() -> None:
    from tests.postgres import drop_database, scratch_database

    url = await scratch_database()
    try:
        await migrate(url, revision="0001")
        connection = await asyncpg.connect(url)
        try:
            now = time.time()
            await connection.execute(
                "INSERT INTO notifications (id, status, template, caller, request, message_id,"
                " created_at, updated_at) VALUES ('n1', 'deferred', 'welcome', 'web', $1,"
                " '<m@example.com>', $2, $2)",
                json.dumps(WELCOME),
                now,
            )
            await connection.executemany(
                "INSERT INTO attempts (notification_id, at, outcome, duration_ms)"
                " VALUES ('n1', $1, 'deferred', 1)",
                [(now,), (now + 1,)],
            )
            await migrate(url)
            row = await connection.fetchrow("SELECT attempts, lease, delivered FROM notifications")
            version = await connection.fetchval("SELECT version_num FROM alembic_version")
        finally:
            await connection.close()
        assert row is not None and dict(row) == {"attempts": 2, "lease": 0, "delivered": None}
        assert version == head()
    finally:
        await drop_database(url)


async def test_an_unreachable_postgresql_stops_the_migration_naming_the_setting() -> None:
    from tests.postgres import free_port

    with pytest.raises(StoreUnavailable, match=r"DATABASE_URL.*PostgreSQL unavailable"):
        await migrate(f"postgresql://postgres@127.0.0.1:{free_port()}/x", wait=1)
