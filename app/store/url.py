"""DATABASE_URL: which store to use and how to reach it.

`sqlite:///path/to/file.db` selects the embedded SQLite store; `postgresql://user:pass@host:5432/db`
(also `postgres://` and SQLAlchemy's `postgresql+asyncpg://`) the PostgreSQL one. Everything else
is refused with a message that shows the accepted forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")
_FORMS = "sqlite:///path/to/file.db or postgresql://user:password@host:5432/database"


@dataclass(frozen=True)
class DatabaseUrl:
    backend: Literal["sqlite", "postgresql"]
    url: str

    @property
    def sqlite_path(self) -> Path:
        if self.backend != "sqlite":
            raise ValueError(f"DATABASE_URL names a {self.backend} database, not a SQLite file")
        return Path(self.url.removeprefix("sqlite:///"))

    @property
    def postgres_dsn(self) -> str:
        """The URL as libpq and asyncpg read it (`postgresql://…`)."""
        if self.backend != "postgresql":
            raise ValueError("DATABASE_URL names a SQLite file, not a PostgreSQL database")
        return "postgresql://" + self.url.split("://", 1)[1]


def parse_database_url(value: str) -> DatabaseUrl:
    """Raises ValueError naming the accepted forms."""
    if value.startswith("sqlite:///") and value != "sqlite:///":
        return DatabaseUrl("sqlite", value)
    for scheme in _POSTGRES_SCHEMES:
        if value.startswith(scheme) and len(value) > len(scheme):
            return DatabaseUrl("postgresql", value)
    raise ValueError(f"DATABASE_URL must look like {_FORMS}")
