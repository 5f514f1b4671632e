"""DATABASE_URL picks the store: a SQLite file or a PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.store.url import parse_database_url


def test_a_sqlite_url_names_a_file() -> None:
    url = parse_database_url("sqlite:///./data/notifications.db")
    assert url.backend == "sqlite" and url.sqlite_path == Path("data/notifications.db")
    with pytest.raises(ValueError, match="SQLite file"):
        _ = url.postgres_dsn


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://notifier:secret@db:5432/notifier",
        "postgres://notifier:secret@db:5432/notifier",
        "postgresql+asyncpg://notifier:secret@db:5432/notifier",
    ],
)
def test_every_postgresql_spelling_gives_one_dsn(value: str) -> None:
    url = parse_database_url(value)
    assert url.backend == "postgresql"
    assert url.postgres_dsn == "postgresql://notifier:secret@db:5432/notifier"


@pytest.mark.parametrize(
    "value", ["", "sqlite:///", "sqlite://relative.db", "mysql://db/x", "postgresql://"]
)
def test_anything_else_is_refused_with_the_accepted_forms(value: str) -> None:
    with pytest.raises(ValueError, match=r"DATABASE_URL must look like sqlite:///.* or postgresql"):
        parse_database_url(value)
